#!/usr/bin/env bash
# Create (or update) ./.venv with edgeasc and everything the workstation needs.
# torch is pinned first: an unpinned `torch` would pull a multi-GB CUDA build.
# Override with EDGEASC_TORCH="torch==X.Y.Z" (or a CUDA wheel spec on a GPU box).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${EDGEASC_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[train,dev]"
