#!/usr/bin/env bash
# Create .venv (if missing) and install coophash-keras with its dependencies. Needs only python3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# [beam]: Apache Beam for coophash_keras.beam, so that its tests run rather than skip (Python >= 3.11).
.venv/bin/python -m pip install -q -r requirements.txt -e ".[beam]"
