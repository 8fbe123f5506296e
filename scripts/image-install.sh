#!/usr/bin/env bash
# How both images install churnflow, shared by Dockerfile.train, Dockerfile.serve and the test that
# proves their install path without a Docker engine (tests/test_images.py).
#   usage: image-install.sh VENV EXTRA      (EXTRA: train or serve)
# A fresh virtual environment, the project (not editable) with one extra, every version pinned by
# constraints.txt, no pip cache left behind.
set -euo pipefail
venv="$1"
extra="$2"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet \
  -c "$here/constraints.txt" "$here[$extra]"
