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
    bar500)         # the bar's second condition: no worse than the best baseline at 500 labels/class
      for seed in 0 1 2; do
        run --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --labels-per-class 500 --bits 32 \
          --seeds $seed --ood --out results/fashion
      done ;;
    equal-time)     # the baselines given coophash:fewlabels's training time: steps = 1,000 x the ratio of
                    # the step times measured alone (results/bench_train_step.json); --curve records
                    # mAP@1000 every 500 steps, so the same runs give mAP vs steps and vs wall-clock
      for seed in 0 1 2; do
        "$PY" benchmarks/protocol.py --steps "$STEPS" --equal-time-of coophash:fewlabels --skip-existing \
          --methods orthohash code_classifier:fixmatch code_classifier --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --curve --log-every 500 --out results/fashion
      done ;;
    ablations)      # issue #13: each part of coophash:fewlabels switched off (config.ABLATIONS), 50 labels/class
      for seed in 0 1 2; do
        run --methods coophash:fewlabels/{no_energy_head,no_inference_head,no_generator_pairs,no_synthetic_labels,no_pseudo_labels,classifier_beside_codes} \
          --labels-per-class 50 --bits 32 --seeds $seed --ood --out results/fashion
      done ;;
    labels-curve)   # mAP vs labels per class (50 and 500 come from bar and bar500)
      for seed in 0 1 2; do
        run --methods coophash:fewlabels orthohash code_classifier:fixmatch --labels-per-class 10 20 100 --bits 32 \
          --seeds $seed --out results/fashion
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
