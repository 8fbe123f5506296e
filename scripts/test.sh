#!/usr/bin/env bash
# The test command of the README (and of CI): set up, lint, run every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash scripts/system-deps.sh
# Docker (installed and started as root), a base image and the three images tests/test_containers.py runs.
# A whole run builds them in the background while the other tests run (the container tests run last and
# wait for the build: scripts/containers.sh holds a lock); a run of chosen tests builds when they need it.
build_log="${CHURNFLOW_CACHE:-$root/.cache/containers}/build-in-background.log"
build=""
if (($# == 0)); then
  mkdir -p "$(dirname "$build_log")"
  echo "test: building the images in the background (log $build_log)" >&2
  bash scripts/containers.sh >"$build_log" 2>&1 &
  build=$!
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/audit.sh
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [[ -n "$build" ]]; then
  wait "$build" || true
  cat "$build_log" >&2
fi
exit "$status"
