"""coophash-keras: CoopHash (cooperative learning of a multipurpose descriptor and a contrastive
pair generator via variational MCMC teaching) as a Keras 3 / TensorFlow package.

Top-level names are imported lazily, so inference-only code (coophash_keras.export and
coophash_keras.serving, which live in the repository's export/ and serving/ folders) can import
`coophash_keras.models.descriptor` without pulling in the training code. Importing the package
registers every model of `coophash_keras.registry` with Keras (lazily), so
`keras.models.load_model("model.keras")` works after a plain `import coophash_keras`."""

import importlib
import os

from coophash_keras._quiet import is_quiet_cli, quiet_stderr  # noqa: E402

if is_quiet_cli():
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
with quiet_stderr(is_quiet_cli()):
    from coophash_keras import registry as _registry  # noqa: E402  (imports keras, so TensorFlow)

_registry.install_lazy_loaders()

__version__ = "0.1.0"
_LAZY = {
    "CoopHashConfig": "coophash_keras.config",
    "CoopHash": "coophash_keras.models.coophash",
    "TrainingDivergedError": "coophash_keras.models.divergence",
    "revise_with_langevin": "coophash_keras.models.langevin",
}
__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coophash_keras' has no attribute {name!r}")
