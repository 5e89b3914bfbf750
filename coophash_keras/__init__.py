"""coophash-keras: CoopHash (cooperative learning of a multipurpose descriptor and a contrastive
pair generator via variational MCMC teaching) as a Keras 3 / TensorFlow package."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from coophash_keras.config import CoopHashConfig  # noqa: E402
from coophash_keras.models import CoopHash, TrainingDivergedError, revise_with_langevin  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CoopHashConfig", "CoopHash", "TrainingDivergedError", "revise_with_langevin", "__version__"]
