#!/usr/bin/env bash
# The benchmark tables of docs/RESULTS.md, one job at a time. Every run writes its JSON when it
# finishes and --skip-existing skips finished runs, so a table too long for one sitting is resumed
# by running the same line again. Usage: bash benchmarks/tables.sh TABLE [TABLE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BASELINES="code_classifier csq orthohash dpn dshgan"
STEPS=${STEPS:-1000}
run() { "$PY" benchmarks/protocol.py --steps "$STEPS" --skip-existing "$@"; }

for table in "$@"; do
  case "$table" in
    bar)            # issue #13's bar at 50 labels/class: the CoopHash candidate, the same pseudo-labels on
                    # the best pointwise loss, and every baseline, seed by seed so a partial table is balanced
      for seed in 0 1 2; do
        run --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --corrupted --recover --out results/fashion
      done ;;
    baselines-32)   # the bar's cells, with the robustness evaluations
      run --methods $BASELINES --labels-per-class 50 500 --bits 32 --seeds 0 1 2 --ood --corrupted --out results/fashion ;;
    baselines-16-64)
      run --methods $BASELINES --labels-per-class 50 500 --bits 16 64 --seeds 0 1 2 --out results/fashion ;;
    digits)
      run --dataset digits --methods $BASELINES coophash --labels-per-class 20 100 --bits 16 32 64 --seeds 0 1 2 --out results/digits ;;
    mosaics)
      run --dataset fashion_mosaics --methods $BASELINES coophash --bits 32 --seeds 0 1 2 --out results/mosaics ;;
    *) echo "unknown table $table" >&2; exit 2 ;;
  esac
done
