#!/usr/bin/env bash
# Set everything up, then run the test suite (the README's test command; CI runs it verbatim).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Bytecode, written once: where the environment sets PYTHONDONTWRITEBYTECODE (as CI machines may),
# every fresh interpreter the suite starts (xdist workers, CLI subprocesses, torchrun ranks: about
# 80) compiles the sources of torch and the rest again, ~5 CPU-s each (a 2-epoch training
# subprocess: 9.6 CPU-s without bytecode, 4.2 with). The prefix keeps it under .venv/, out of the
# source tree and of site-packages.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="${PYTHONPYCACHEPREFIX:-$PWD/.venv/pycache}"
# the architecture first: layers, the torch-free runtime, no cycles (pyproject.toml [tool.importlinter])
.venv/bin/lint-imports --no-cache
# one worker per core, each test file on one worker (its module fixtures built once); mutation
# runs (scripts/mutation.sh) call pytest in-process instead. EDGEASC_TEST_WORKERS=0: serial.
exec .venv/bin/python -m pytest -n "${EDGEASC_TEST_WORKERS:-auto}" --dist loadfile "$@"
