#!/usr/bin/env bash
# Set up, then run ruff and the test suite; CI runs this (.ci/run). `--fast` (taken out here, before
# the other arguments go to pytest) leaves out the tests marked slow: the quick tier for day-to-day
# work (README, "Tests"). pytest's own exit code is returned (5 = no tests = failure).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
tier=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then tier=(-m "not slow"); else args+=("$arg"); fi
done
bash scripts/setup.sh
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet .
.venv/bin/python -m pytest -q -rs --durations=20 ${tier[@]+"${tier[@]}"} tests ${args[@]+"${args[@]}"}
