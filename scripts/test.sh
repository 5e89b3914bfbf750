#!/usr/bin/env bash
# Set up, then run the test suite. pytest's own exit code is returned (5 = no tests = failure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet .
.venv/bin/python -m pytest -q --durations=20 tests "$@"
