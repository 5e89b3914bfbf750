"""The model registry: every hashing model the package ships, under the name the CLI, the
benchmarks and the every-model test use. Adding an entry here is all it takes for a model to be
trainable (`coophash train --model NAME`), benchmarked, exported, served, indexed and tested.

Importing this module is cheap (no model code): each entry names its module and class, which are
imported on first use. `install_lazy_loaders()` (run by `import coophash_keras`) lets
`keras.models.load_model` find every registered model without importing the training code first.
"""

from __future__ import annotations

import dataclasses
import importlib

import keras

PACKAGE = "coophash"  # the `package` of every @register_keras_serializable in coophash_keras


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    module: str
    class_name: str
    summary: str

    @property
    def registered_name(self) -> str:
        return f"{PACKAGE}>{self.class_name}"

    def load(self):
        return getattr(importlib.import_module(self.module), self.class_name)


_ENTRIES = (
    ModelEntry("coophash", "coophash_keras.models.coophash", "CoopHash", "CoopHash (the paper's method)"),
    ModelEntry("dshgan", "coophash_keras.baselines.dsh_gan", "DSHGAN", "DSH-GAN, the GAN predecessor"),
    ModelEntry(
        "code_classifier",
        "coophash_keras.baselines.code_classifier",
        "CodeClassifier",
        "classification through the codes (cross-entropy)",
    ),
    ModelEntry("csq", "coophash_keras.baselines.csq", "CSQ", "CSQ: Hadamard hash centres"),
    ModelEntry("orthohash", "coophash_keras.baselines.orthohash", "OrthoHash", "OrthoHash: cosine to a fixed codebook"),
    ModelEntry("dpn", "coophash_keras.baselines.dpn", "DPN", "DPN: polarization to random targets"),
    ModelEntry("triplet", "coophash_keras.baselines.triplet", "TripletHashNet", "in-batch triplets + classification"),
    ModelEntry(
        "itq", "coophash_keras.baselines.label_free", "ITQ", "ITQ: PCA + a learned rotation, no labels (fitted)"
    ),
    ModelEntry("lsh", "coophash_keras.baselines.label_free", "LSH", "sign of a random projection, no labels (fitted)"),
)
MODELS = {entry.name: entry for entry in _ENTRIES}


def model_names() -> list[str]:
    return list(MODELS)


def model_class(name: str):
    """The keras.Model subclass registered under `name` (imports its module)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    return MODELS[name].load()


def entry_for_registered_name(registered_name: str) -> ModelEntry | None:
    return next((e for e in _ENTRIES if e.registered_name == registered_name), None)


class _LazyModelClass:
    """Stands in for a registered model class until its module is imported: Keras only calls
    `from_config` on what the registry returns, so this imports the real class and delegates.
    The real class's decorator replaces this entry when its module is imported."""

    def __init__(self, entry: ModelEntry):
        self.entry = entry

    def from_config(self, config):
        return self.entry.load().from_config(config)


def install_lazy_loaders() -> None:
    objects = keras.saving.get_custom_objects()
    for entry in _ENTRIES:
        objects.setdefault(entry.registered_name, _LazyModelClass(entry))
