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
# One resolver pass with torch pinned in it; --no-compile: Python writes the bytecode of the modules
# it actually imports on first use, instead of pip compiling all of torch (about 20 CPU-s).
.venv/bin/python -m pip install --quiet --no-compile "$TORCH_SPEC" -e ".[train,dev]"
