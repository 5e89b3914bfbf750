#!/usr/bin/env bash
# Set up, then train CoopHash on the embedded digits, evaluate it, and print mAP and where the model is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/coophash demo --run-dir runs/demo "$@"
