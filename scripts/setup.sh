#!/usr/bin/env bash
# Create .venv (if missing) and install coophash-keras with its dependencies. Needs only python3.
# Also fetches what the tests read beyond Python packages, so that a fresh machine skips only what
# it truly cannot run (README, "Tests"): Fashion-MNIST's IDX files from Debian's
# dataset-fashion-mnist, where apt-get can install it (root); otherwise its two tests skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# [beam]: Apache Beam for coophash_keras.beam, so that its tests run rather than skip (Python >= 3.11).
.venv/bin/python -m pip install -q -r requirements.txt -e ".[beam]"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 ||
      echo "note: could not install dataset-fashion-mnist; the two tests that read it will skip"
  else
    echo "note: Fashion-MNIST not installed (as root: apt-get install dataset-fashion-mnist); its two tests will skip"
  fi
fi
