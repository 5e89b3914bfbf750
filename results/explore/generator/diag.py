"""The diagnostics line of one run directory (what `coophash diagnose --run-dir R` computes)."""

import sys

from coophash_keras.diagnostics import generator_diagnostics, save_sample_grid, summary_line
from coophash_keras.io import load_model
from coophash_keras.runs import load_run, load_run_data, model_path

run_dir = sys.argv[1]
data = load_run_data(load_run(run_dir))
model = load_model(model_path(run_dir))
print(summary_line(generator_diagnostics(model, data, verbose=1)))
save_sample_grid(run_dir + "/samples.png", model, data.num_classes, class_names=data.class_names)
