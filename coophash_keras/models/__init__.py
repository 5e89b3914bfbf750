"""Models. Imported lazily: `coophash_keras.models.descriptor` (inference) does not load
`coophash_keras.models.coophash` (training)."""

import importlib

_LAZY = {
    "CoopHash": "coophash_keras.models.coophash",
    "DivergenceGuard": "coophash_keras.models.divergence",
    "HashingModel": "coophash_keras.models.base",
    "TrainingDivergedError": "coophash_keras.models.divergence",
    "HashNetwork": "coophash_keras.models.networks",
    "MultipurposeDescriptor": "coophash_keras.models.descriptor",
    "revise_with_langevin": "coophash_keras.models.langevin",
}
__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coophash_keras.models' has no attribute {name!r}")
