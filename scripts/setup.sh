#!/usr/bin/env bash
# Creates .venv and installs churnflow with every pinned dependency (constraints.txt).
# Idempotent: re-installs only when pyproject.toml or constraints.txt changed. Sourced or run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHURNFLOW_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.churnflow-installed"
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" ]]; then
  "$python" -m venv "$venv"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: installing churnflow and its pinned dependencies into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$root/constraints.txt" -e "$root[dev]" >&2
  echo "$want" > "$stamp"
fi
