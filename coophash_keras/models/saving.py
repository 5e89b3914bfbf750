"""Saves that refuse NaN/inf weights and never leave half a file, for HashingModel.

`model.save` and `save_weights` write to a temporary file renamed over the target when complete,
so a refused or killed save leaves the old file as it was. `keras.saving.save_model(model, path)`
does not come through `model.save`: it opens `path` for writing (truncating a good file) after
reading nothing of the model but `built`, so `built` refuses a model that holds non-finite weights;
`get_config` refuses as well, for every other way of serialising the model."""

import os

import tensorflow as tf

from coophash_keras.io import all_weights_finite, atomic_path


class FiniteAtomicSaves:
    """Mixed into a keras.Model (before it): the refusals and atomic saves described above."""

    saves_atomically = True  # coophash_keras.io.save_model relies on it

    def _refuse_non_finite(self, what):
        if not all_weights_finite(self):
            raise ValueError(f"refusing to {what}: the model holds non-finite (NaN/inf) weights")

    def save(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save`, refused for non-finite weights, and written to a temporary file renamed
        over `filepath` when complete: a refused or killed save leaves the old file as it was
        (keras.callbacks.ModelCheckpoint and coophash_keras.io.save_model come through here)."""
        self._refuse_non_finite(f"save {filepath}")
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if path is None or not path.endswith(".keras") or (os.path.exists(path) and not overwrite):
            return super().save(filepath, overwrite=overwrite, **kwargs)  # file objects, directories, prompts
        with atomic_path(path, ".keras") as tmp:
            return super().save(tmp, **kwargs)

    def save_weights(self, filepath, overwrite=True, **kwargs):
        """`keras.Model.save_weights`, refused for non-finite weights, through a temporary file."""
        self._refuse_non_finite(f"save weights to {filepath}")
        path = os.fspath(filepath) if isinstance(filepath, (str, os.PathLike)) else None
        if path is None or not path.endswith(".weights.h5") or (os.path.exists(path) and not overwrite):
            return super().save_weights(filepath, overwrite=overwrite, **kwargs)
        with atomic_path(path, ".weights.h5") as tmp:
            return super().save_weights(tmp, **kwargs)

    @property
    def built(self):
        # The one attribute keras.saving.save_model reads before it truncates the file. Checked in
        # eager code only (a traced function reads `built` while building, not to save), and a
        # model cannot become non-finite by training (the guarded update), only by assignment.
        built = getattr(self, "_hashing_built", False)
        if built and tf.executing_eagerly():
            self._refuse_non_finite("save or use the model")
        return built

    @built.setter
    def built(self, value):
        self._hashing_built = value

    def get_config(self):
        self._refuse_non_finite("serialise the model")
        return super().get_config()

