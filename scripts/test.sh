#!/usr/bin/env bash
# Set everything up, then run the test suite (the README's test command; CI runs it verbatim).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
