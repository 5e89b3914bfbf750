#!/usr/bin/env bash
# The benchmark tables of docs/RESULTS.md, one job at a time. Every run writes its JSON when it
# finishes and --skip-existing skips finished runs, so a table too long for one sitting is resumed
# by running the same line again. Usage: [SEEDS="0"] bash benchmarks/tables.sh TABLE [TABLE ...]
# SEEDS (default "0 1 2") runs a subset of seeds: seed 0 of every table first gives a whole, if
# noisy, picture early in a queue that takes days; the other seeds complete it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BASELINES="code_classifier csq orthohash dpn dshgan"
STEPS=${STEPS:-1000}
SEEDS=${SEEDS:-0 1 2}
run() { "$PY" benchmarks/protocol.py --steps "$STEPS" --skip-existing "$@"; }
best_sets() {  # a tuning.json's best hyper-parameters as --set KEY=VALUE arguments
  "$PY" -c "import json, sys; b = json.load(open(sys.argv[1]))['best_hyperparameters']; \
print(' '.join(f'--set {k}={v}' for k, v in sorted(b.items())))" "$1"
}

for table in "$@"; do
  case "$table" in
    bar)            # the bar at 50 labels/class (docs/RESULTS.md): the CoopHash candidate, the same pseudo-labels on
                    # the best pointwise loss, and every baseline, seed by seed so a partial table is balanced
      for seed in $SEEDS; do
        run --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --corrupted --recover --out results/fashion
      done ;;
    bar500)         # the bar's second condition: no worse than the best baseline at 500 labels/class
      for seed in $SEEDS; do
        run --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --labels-per-class 500 --bits 32 \
          --seeds $seed --ood --out results/fashion
      done ;;
    equal-time)     # the baselines given coophash:fewlabels's training time: steps = 1,000 x the ratio of
                    # the step times measured alone (results/bench_train_step.json); --curve records
                    # mAP@1000 every 500 steps, so the same runs give mAP vs steps and vs wall-clock. The ratio
                    # moves with the CPU: step times from another CPU are kept aside and measured again here first
      "$PY" benchmarks/bench_train_step.py --methods $BASELINES code_classifier:fixmatch orthohash:fixmatch \
        coophash coophash:fewlabels --json results/bench_train_step.json --unless-same-cpu
      for seed in $SEEDS; do
        "$PY" benchmarks/protocol.py --steps "$STEPS" --equal-time-of coophash:fewlabels --skip-existing \
          --methods orthohash code_classifier:fixmatch code_classifier --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --curve --log-every 500 --out results/fashion
      done ;;
    ablations)      # each head and each switch of coophash:fewlabels switched off (config.ABLATIONS),
                    # 50 labels/class, at the bar's 1,000 steps: 3,000 steps improve CoopHash on every seed but
                    # did not make it lead the best baseline on all three (tables.sh coophash-long), and
                    # would triple the ablations' ~6 h
      for seed in $SEEDS; do
        run --methods coophash:fewlabels/{no_energy_head,no_inference_head,no_classifier_head,no_generator_pairs,no_synthetic_labels,no_pseudo_labels,classifier_beside_codes} \
          --labels-per-class 50 --bits 32 --seeds $seed --ood --out results/fashion
      done ;;
    taught)         # the study again on the working generator (generator_latent "taught", docs/GENERATOR.md), into
                    # its own folder: the bar's cell with the generator's diagnostics, then the generative parts'
                    # ablations, then 10 labels/class; the old runs of the methods without a generator stay valid
      for seed in $SEEDS; do
        run --methods coophash:fewlabels dshgan coophash:paper --labels-per-class 50 --bits 32 --seeds $seed \
          --ood --corrupted --recover --diagnose --out results/fashion_taught
      done
      for seed in $SEEDS; do
        run --methods coophash:fewlabels/{no_energy_head,no_inference_head,no_generator_pairs,no_synthetic_labels} \
          --labels-per-class 50 --bits 32 --seeds $seed --ood --diagnose --out results/fashion_taught
      done
      for seed in $SEEDS; do
        run --methods coophash:fewlabels --labels-per-class 10 --bits 32 --seeds $seed --ood --diagnose \
          --out results/fashion_taught
      done
      # the paper's other robustness claim: 20 % of the labelled images corrupted once per seed (a kind drawn
      # per image); CoopHash and the bar cell's best baseline train on the same corrupted set
      for seed in $SEEDS; do
        run --methods coophash:fewlabels orthohash:fixmatch --labels-per-class 50 --bits 32 --seeds $seed --ood \
          --corrupt-train 0.2 --tag corrupt_train20 --diagnose --out results/fashion_taught
      done ;;
    taught-bar500)  # the bar's second condition on the working generator: coophash:fewlabels at 500 labels/class
                    # (the baselines' untagged runs in results/fashion have no generator and stay valid)
      for seed in $SEEDS; do
        run --methods coophash:fewlabels --labels-per-class 500 --bits 32 --seeds $seed --ood --diagnose \
          --out results/fashion_taught
      done ;;
    taught-equal-time) # the re-run's equal-wall-clock column: the bar cell's best baselines given the working
                    # generator's coophash:fewlabels training time (its step time measured alone after the fix)
      "$PY" benchmarks/bench_train_step.py --methods orthohash:fixmatch code_classifier:fixmatch orthohash \
        coophash:fewlabels --json results/bench_train_step.json --unless-same-cpu
      for seed in $SEEDS; do
        "$PY" benchmarks/protocol.py --steps "$STEPS" --equal-time-of coophash:fewlabels --skip-existing \
          --methods orthohash:fixmatch code_classifier:fixmatch orthohash --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --out results/fashion_taught
      done ;;
    taught-tune)    # what the fix made stale, re-tuned on the working generator: T, delta and the two loss weights
                    # the revised pairs feed (likelihood, triplet), keras-tuner on a held-out fifth of the labelled
                    # images (never the queries); then the best at the bar's 1,000 steps, seed 0, tag "tuned"
      "$PY" -m coophash_keras.cli tune --dataset fashion_mnist --labels-per-class 50 --bits 32 \
        --method coophash:fewlabels --tune langevin_steps,langevin_step_size,nll_weight,triplet_weight \
        --trials 8 --epochs 2 --steps-per-epoch 250 --run-dir runs/tune_taught_fewlabels
      mkdir -p results/tuning && cp runs/tune_taught_fewlabels/tuning.json results/tuning/taught_fewlabels.json
      best=$(best_sets runs/tune_taught_fewlabels/tuning.json)
      run --methods coophash:fewlabels $best --tag tuned --labels-per-class 50 --bits 32 --seeds $SEEDS --ood \
        --diagnose --out results/fashion_taught ;;
    switches)       # the untried switches on top of coophash:fewlabels, and augmentation of the labelled
                    # batch for every method alike: a seed-0 screen first (the switch table compares each with its
                    # configuration on the same seed); what moves by more than the seed spread gets seeds 1-2
      run --methods coophash:fewlabels+jem coophash:fewlabels+recovery coophash:fewlabels+persistent \
        --labels-per-class 50 --bits 32 --seeds 0 --ood --out results/fashion
      run --methods coophash:fewlabels orthohash code_classifier:fixmatch code_classifier --labels-per-class 50 \
        --bits 32 --seeds 0 --ood --set augmentation=flip,translate=0.125 --tag augment --out results/fashion
      # a Langevin step that moves the samples (delta 4: 16x the default's drift per step, ~0.07 RMS per pixel
      # at the logged gradient norms, under the 0.1 clip), after the tuner's 6 random trials drew none above 1.6
      run --methods coophash:fewlabels --labels-per-class 50 --bits 32 --seeds 0 --ood --set langevin_step_size=4 \
        --tag langevin_step4 --out results/fashion ;;
    switches-seeds) # seeds 1-2 of the switches (after their screen), so each is measured on 3 seeds
      for seed in $SEEDS; do
        [ "$seed" = 0 ] && continue  # seed 0 is the screen (switches)
        run --methods coophash:fewlabels+jem coophash:fewlabels+recovery coophash:fewlabels+persistent \
          --labels-per-class 50 --bits 32 --seeds $seed --ood --out results/fashion
        run --methods coophash:fewlabels orthohash code_classifier:fixmatch code_classifier --labels-per-class 50 \
          --bits 32 --seeds $seed --ood --set augmentation=flip,translate=0.125 --tag augment --out results/fashion
      done ;;
    codebook)       # classification through the codes with the best baseline's loss: CoopHash's classification through the codes by
                    # OrthoHash's codebook and margin (coophash:fewlabels+codebook), against the same pseudo-labels
                    # on OrthoHash (orthohash:fixmatch, a reference of the bar like code_classifier:fixmatch)
      for seed in $SEEDS; do
        run --methods orthohash:fixmatch coophash:fewlabels+codebook --labels-per-class 50 --bits 32 \
          --seeds $seed --ood --out results/fashion
      done ;;
    tune-langevin)  # Langevin step size and noise of coophash:fewlabels by keras-tuner, on a held-out
                    # fifth of the labelled images (never the queries); then train the best at 1,000 steps
      "$PY" -m coophash_keras.cli tune --dataset fashion_mnist --labels-per-class 50 --bits 32 \
        --method coophash:fewlabels --tune langevin_step_size,langevin_noise_scale \
        --trials 6 --epochs 2 --steps-per-epoch 250 --run-dir runs/tune_langevin_fewlabels
      mkdir -p results/tuning && cp runs/tune_langevin_fewlabels/tuning.json results/tuning/langevin_fewlabels.json
      best=$(best_sets runs/tune_langevin_fewlabels/tuning.json)
      run --methods coophash:fewlabels $best --tag langevin_tuned --labels-per-class 50 --bits 32 --seeds 0 --ood \
        --out results/fashion ;;
    coophash-long)  # does CoopHash win late? 3x the steps for it and the two best baselines,
                    # mAP@1000 every 500 steps (the curve plot), seed by seed
      for seed in $SEEDS; do
        "$PY" benchmarks/protocol.py --steps 3000 --skip-existing --methods orthohash code_classifier:fixmatch \
          coophash:fewlabels --curve --log-every 500 --tag long --labels-per-class 50 --bits 32 --seeds $seed --ood \
          --out results/fashion
      done ;;
    paper)          # the paper's form of CoopHash on today's shared base (last measured on the old trunk)
      run --methods coophash:paper --labels-per-class 50 --bits 32 --seeds $SEEDS --ood --out results/fashion ;;
    labels-curve)   # mAP vs labels per class (50 and 500 come from bar and bar500)
      for seed in $SEEDS; do
        run --methods coophash:fewlabels orthohash code_classifier:fixmatch --labels-per-class 10 20 100 --bits 32 \
          --seeds $seed --out results/fashion
      done ;;
    baselines-32)   # the bar's cells, with the robustness evaluations
      run --methods $BASELINES --labels-per-class 50 500 --bits 32 --seeds $SEEDS --ood --corrupted --out results/fashion ;;
    bar-bits)       # the bar at 16 and 64 bits, 50 labels/class: every method of the bar, with OOD; the
                    # candidate and the OrthoHash pair first, since they decide the bar at 32 bits
      for seed in $SEEDS; do
        run --methods coophash:fewlabels orthohash:fixmatch orthohash code_classifier:fixmatch code_classifier csq dpn \
          dshgan --labels-per-class 50 --bits 16 64 --seeds $seed --ood --out results/fashion
      done ;;
    baselines-16-64) # 16 and 64 bits at 50 and 500 labels/class: every method of the bar, seed by seed (the
                    # 50/class runs of bar-bits are skipped as existing)
      for seed in $SEEDS; do
        run --methods coophash:fewlabels orthohash:fixmatch code_classifier:fixmatch $BASELINES --labels-per-class 50 500 \
          --bits 16 64 --seeds $seed --out results/fashion
      done ;;
    digits)         # the quick row: the same methods on scikit-learn's 8x8 digits
      run --dataset digits --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --labels-per-class 20 100 \
        --bits 16 32 64 --seeds $SEEDS --out results/digits ;;
    mosaics)
      for seed in $SEEDS; do  # multi-label: every method defines it (one shared label = relevant)
        run --dataset fashion_mosaics --methods coophash:fewlabels code_classifier:fixmatch $BASELINES --bits 32 \
          --seeds $seed --out results/mosaics
      done ;;
    mosaics-taught) # the mosaics' CoopHash rows again on the working generator (issue #39, item 6), into their
                    # own folder; the run directories are kept for bench_ood.py's multi-label OOD scores;
                    # --backup: a seed takes over an hour here, so a stopped one resumes from its last epoch
      for seed in $SEEDS; do
        run --dataset fashion_mosaics --methods coophash:fewlabels --bits 32 --seeds $seed --backup \
          --out results/mosaics_taught --run-root runs/mosaics_taught
      done ;;
    mosaics-ablations) # why CoopHash trails on the mosaics: the parts that use the generator's pairs (the
                    # triplets and their labels), and the energy head, switched off on the multi-label data
      for seed in $SEEDS; do
        run --dataset fashion_mosaics --methods coophash:fewlabels/{no_generator_pairs,no_synthetic_labels,no_energy_head} \
          --bits 32 --seeds $seed --out results/mosaics
      done ;;
    mosaics-switches) # a multi-label fix to try on the mosaics: c- as a label set of |c+| absent classes (the
                    # default draws one absent class, so every x- is asked to be a single-class mosaic, which
                    # no real mosaic is)
      for seed in $SEEDS; do
        run --dataset fashion_mosaics --methods coophash:fewlabels+label_sets --bits 32 --seeds $seed \
          --out results/mosaics
      done ;;
    *) echo "unknown table $table" >&2; exit 2 ;;
  esac
done
