"""coophash-keras: CoopHash (cooperative learning of a multipurpose descriptor and a contrastive
pair generator via variational MCMC teaching) as a Keras 3 / TensorFlow package.

Top-level names are imported lazily, so inference-only code (export/, serving/) can import
`coophash_keras.models.descriptor` without pulling in the training code."""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
_LAZY = {
    "CoopHashConfig": "coophash_keras.config",
    "CoopHash": "coophash_keras.models.coophash",
    "TrainingDivergedError": "coophash_keras.models.coophash",
    "revise_with_langevin": "coophash_keras.models.langevin",
}
__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coophash_keras' has no attribute {name!r}")
