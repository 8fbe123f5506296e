#!/usr/bin/env bash
# Makes the container tests (tests/test_containers.py) runnable: a Docker engine, a base image, and
# the three images they run, built with the layer cache so a second run takes seconds.
#   - As root (CI), installs Debian's docker.io and debootstrap when missing and starts dockerd in the
#     background when `docker info` fails (log: $CHURNFLOW_CACHE/dockerd.log).
#   - No registry is reachable here, so python:3.12-slim cannot be pulled: when it is not present, a
#     Debian bookworm base is made once with debootstrap (churnflow-base:bookworm) and passed as
#     BASE_IMAGE; the Dockerfiles keep python:3.12-slim as the default for real builds.
#   - Builds churnflow-train:test, churnflow-serve:test and churnflow-storage-initializer:test
#     (KServe's storage-initializer code from PyPI, tests/containers/Dockerfile.storage-initializer).
# Writes what happened (each phase's seconds, image sizes, or the one-line reason Docker cannot be had)
# to $CHURNFLOW_CACHE/containers.json (default .cache/containers/), which the tests read; they fail
# with that line, never skip. Each run is also appended to containers-history.jsonl there.
# Exits 0 even when Docker is missing, so the rest of the test command still runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${CHURNFLOW_CACHE:-$root/.cache/containers}"
mkdir -p "$cache"
# One build at a time: scripts/test.sh starts this in the background while the other tests run, and the
# container tests' fixture runs it again, which waits here until the first has finished (then it is cached).
exec 9>"$cache/lock"
if ! flock -w 1200 9; then
  echo "containers: another build has held $cache/lock for 20 min: see $cache/build-in-background.log" >&2
  exit 1
fi
state="$cache/containers.json"
# The legacy builder: Debian's docker.io 20.10 has no buildx plugin, and its layer cache is enough here.
export DOCKER_BUILDKIT=0
base_tag="churnflow-base:bookworm"
declare -A seconds=()
declare -A sizes=()
error=""

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

write_state() {
  local base="${1:-}" json="{" sep="" key
  json+="\"error\": \"${error//\"/\'}\", \"base_image\": \"$base\", \"seconds\": {"
  for key in "${!seconds[@]}"; do json+="$sep\"$key\": ${seconds[$key]}"; sep=", "; done
  json+="}, \"sizes\": {"
  sep=""
  for key in "${!sizes[@]}"; do json+="$sep\"$key\": ${sizes[$key]}"; sep=", "; done
  json+="}}"
  printf '%s\n' "$json" > "$state"
  # every run's record, with its time: the latest run is often all cached, the first one is the measurement
  printf '{"at": "%s", "run": %s}\n' "$(date -u +%FT%TZ)" "$json" >> "$cache/containers-history.jsonl"
}

fail() {
  error="$1"
  echo "containers: $error" >&2
  write_state
  exit 0
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# 1. The packages
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  if is_root; then
    start="$(now)"
    echo "containers: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    seconds[apt]="$(elapsed "$start")"
  elif [[ " ${missing[*]} " == *" docker.io "* ]]; then
    fail "Docker is not installed and this is not root: install Debian's docker.io (and debootstrap) and start dockerd"
  fi
fi
# Debian's client is 20.10 like its engine; prefer it over any newer client on PATH, which would want buildx.
docker=docker
[[ -x /usr/bin/docker ]] && docker=/usr/bin/docker

# 2. The engine
if ! "$docker" info >/dev/null 2>&1; then
  if ! is_root; then
    fail "the Docker engine does not answer (docker info failed) and this is not root: start dockerd, or run as root"
  fi
  start="$(now)"
  echo "containers: starting dockerd (log $cache/dockerd.log)" >&2
  # 9>&-: dockerd outlives this script and must not inherit the build lock, or every later build waits forever.
  nohup dockerd >"$cache/dockerd.log" 2>&1 9>&- &
  for _ in $(seq 1 120); do
    "$docker" info >/dev/null 2>&1 && break
    sleep 0.5
  done
  "$docker" info >/dev/null 2>&1 || fail "dockerd did not become ready in 60 s: see $cache/dockerd.log"
  seconds[dockerd]="$(elapsed "$start")"
fi

# 3. The base image
if "$docker" image inspect python:3.12-slim >/dev/null 2>&1; then
  base=python:3.12-slim
else
  base="$base_tag"
  if ! "$docker" image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null 2>&1 || fail "python:3.12-slim is not present and debootstrap is missing to build a base"
    start="$(now)"
    mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    mirror="${mirror:-http://deb.debian.org/debian}"
    rootfs="$(mktemp -d /var/tmp/churnflow-base.XXXXXX)"
    echo "containers: building $base with debootstrap from $mirror" >&2
    if ! debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1; then
      rm -rf "$rootfs"
      fail "debootstrap failed: see $cache/debootstrap.log"
    fi
    # Package downloads in the builds go through the machine's trust store (a proxy may re-sign).
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$docker" import - "$base" >/dev/null
    rm -rf "$rootfs"
    seconds[base]="$(elapsed "$start")"
  fi
fi

# 4. The images
build() {
  local name="$1" dockerfile="$2" context="$3" start
  start="$(now)"
  echo "containers: building $name" >&2
  if ! "$docker" build --network host --build-arg "BASE_IMAGE=$base" -f "$dockerfile" -t "$name" "$context" \
    >"$cache/build-${name%%:*}.log" 2>&1; then
    fail "docker build of $name failed: see $cache/build-${name%%:*}.log"
  fi
  seconds["build ${name%%:*}"]="$(elapsed "$start")"
  sizes["${name%%:*}"]="$("$docker" image inspect -f '{{.Size}}' "$name")"
}
build churnflow-train:test Dockerfile.train .
build churnflow-serve:test Dockerfile.serve .
build churnflow-storage-initializer:test tests/containers/Dockerfile.storage-initializer tests/containers
write_state "$base"
for key in "${!seconds[@]}"; do echo "containers: $key ${seconds[$key]} s" >&2; done
for key in "${!sizes[@]}"; do
  echo "containers: image $key $(awk -v b="${sizes[$key]}" 'BEGIN { printf "%.0f", b / 1e6 }') MB" >&2
done
