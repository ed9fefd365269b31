#!/usr/bin/env bash
# Set everything up, then run the test suite (the README's test command; CI runs it verbatim).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the architecture first: layers, the torch-free runtime, no cycles (pyproject.toml [tool.importlinter])
.venv/bin/lint-imports --no-cache
# one worker per core, each test file on one worker (its module fixtures built once); mutation
# runs (scripts/mutation.sh) call pytest in-process instead. EDGEASC_TEST_WORKERS=0: serial.
exec .venv/bin/python -m pytest -n "${EDGEASC_TEST_WORKERS:-auto}" --dist loadfile "$@"
