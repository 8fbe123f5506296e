#!/usr/bin/env bash
# The test command of the README (and of CI): set up, lint, run every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash scripts/system-deps.sh
# Docker (installed and started as root), a base image and the three images tests/test_containers.py runs.
bash scripts/containers.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
bash scripts/audit.sh
exec .venv/bin/python -m pytest "$@"
