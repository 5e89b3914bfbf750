# The README demo's training command on digits, seeds 0-2, with the generator's diagnostics
# (issue 30's must-show on 3 seeds). Run 2026-12-04 on 2 cores of an Intel Xeon, one job at a time.
for s in 0 1 2; do
  R=runs/digits_demo_s$s
  coophash train --dataset digits --bits 32 --seed $s --run-dir $R --progress none
  coophash evaluate --run-dir $R                       # -> $R/metrics.json, copied here as metrics_s$s.json
  coophash diagnose --run-dir $R --output results/generator_digits_demo/diagnostics_s$s.json
done
