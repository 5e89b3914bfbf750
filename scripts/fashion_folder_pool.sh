#!/usr/bin/env bash
# The harness's few-labels-plus-pool cell (Fashion-MNIST, code_classifier:fixmatch, 50 labels/class,
# 32 bits, 1,000 steps of batch 64, 1,000 test-file queries against the other 69,000 images) run
# from PNG files through the command line, seeds 0 1 2 (docs/FEW_LABELS.md says how it differs).
#   bash scripts/fashion_folder_pool.sh [DATA_DIR (default data/fashion_fp)] [RUNS_DIR (default runs/fashion_fp)]
# Writes RUNS_DIR/s<seed>/ (run directories with metrics.json) and results/folder_pool/s<seed>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/fashion_fp}
RUNS=${2:-runs/fashion_fp}
PY=${PYTHON:-.venv/bin/python}
if [ ! -d "$DATA/test" ]; then
  # 50 labelled per class; the other 59,500 train images as the pool, in class folders so that
  # images:$DATA/pool reads them unlabelled and folder:$DATA/pool labelled (the database); the test file.
  "$PY" scripts/make_fashion_folder.py --out "$DATA/labelled" --per-class 50 --split train \
      --unlabeled "$DATA/pool" --unlabeled-count all --unlabeled-by-class
  "$PY" scripts/make_fashion_folder.py --out "$DATA/test" --per-class 1000 --split test
fi
mkdir -p results/folder_pool
for seed in 0 1 2; do
  run="$RUNS/s$seed"
  rm -rf "$run"
  "$PY" -m coophash_keras.cli train --dataset "folder:$DATA/labelled" --query-per-class 0 \
      --unlabeled "images:$DATA/pool" --method code_classifier:fixmatch --bits 32 --batch-size 64 \
      --epochs 4 --steps-per-epoch 250 --seed "$seed" --run-dir "$run" --progress epoch
  "$PY" -m coophash_keras.cli evaluate --run-dir "$run" --queries "folder:$DATA/test" --query-per-class 100 \
      --database "folder:$DATA/labelled" --database "folder:$DATA/pool" --topk 1000 --progress none
  cp "$run/metrics.json" "results/folder_pool/s$seed.json"
done
