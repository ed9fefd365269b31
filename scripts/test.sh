#!/usr/bin/env bash
# Set everything up, then run the test suite (the README's test command; CI runs it verbatim).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the architecture first: layers, the torch-free runtime, no cycles (pyproject.toml [tool.importlinter])
.venv/bin/lint-imports --no-cache
exec .venv/bin/python -m pytest "$@"
