"""The generator diagnostics in TensorBoard, every N epochs of a CoopHash or DSH-GAN run."""

import os

import keras
import numpy as np
import tensorflow as tf


class GeneratorDiagnosticsCallback(keras.callbacks.Callback):
    """Writes `generator_diagnostics` (diagnostics/generator.py) to `<log_dir>/generator` at the end of
    every `every_n_epochs`-th epoch, and adds its headline numbers to the epoch's logs
    (gen_spread, gen_consistency, ...) so that progress.jsonl and history.json keep them:
      scalars  generator/spread_ratio(_revised), generator/class_consistency(_revised),
               generator/frechet_(generated|revised|real), latent/active_units, latent/kl_total,
               energy/(real|generated|revised)
      image    generator/samples: a row per class, columns over z (raw | revised)
    The reference classifier is the data set's cached one (trained on first use)."""

    def __init__(self, log_dir, data, every_n_epochs=1, seed=0):
        super().__init__()
        self.log_dir, self.data = log_dir, data
        self.every_n_epochs, self.seed = max(1, int(every_n_epochs)), int(seed)
        self._writer = self._reference = None

    def on_epoch_end(self, epoch, logs=None):
        from coophash_keras.diagnostics import ReferenceClassifier, generator_diagnostics, sample_grid

        if (epoch + 1) % self.every_n_epochs:
            return
        if self._reference is None:
            self._reference = ReferenceClassifier.for_data(self.data, verbose=1)
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "generator"))
        report = generator_diagnostics(self.model, self.data, self._reference, seed=self.seed)
        scalars = headline_numbers(report)
        with self._writer.as_default(step=epoch):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            grid = sample_grid(self.model, self.data.num_classes, seed=self.seed, class_names=self.data.class_names)
            tf.summary.image("generator/samples", grid[None], max_outputs=1)
        self._writer.flush()
        if logs is not None:
            logs.update({"gen_" + k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("generator/")})

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()


def headline_numbers(report) -> dict:
    """TensorBoard tag -> value of a generator_diagnostics report."""
    out = {
        "generator/spread_ratio": report["spread_ratio"]["mean"],
        "generator/class_consistency": report["class_consistency"]["generated"],
        "generator/frechet_generated": report["frechet"]["generated"],
        "generator/frechet_real": report["frechet"]["real"],
    }
    if report.get("spread_ratio_revised"):
        out["generator/spread_ratio_revised"] = report["spread_ratio_revised"]["mean"]
        out["generator/class_consistency_revised"] = report["class_consistency"]["revised"]
        out["generator/frechet_revised"] = report["frechet"]["revised"]
    if "latent_real" in report:
        out["latent/active_units"] = report["latent_real"]["active_units"]
        out["latent/kl_total"] = report["latent_real"]["kl_total"]
        out.update({f"energy/{k}": v for k, v in report["energy"].items()})
    return {k: float(np.asarray(v)) for k, v in out.items()}
