#!/usr/bin/env bash
# Set up, then run the test suite. pytest's own exit code is returned (5 = no tests = failure).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q tests "$@"
