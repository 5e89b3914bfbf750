from coophash_keras.models.coophash import CoopHash, DivergenceGuard, TrainingDivergedError
from coophash_keras.models.descriptor import MultipurposeDescriptor
from coophash_keras.models.langevin import revise_with_langevin

__all__ = ["CoopHash", "DivergenceGuard", "TrainingDivergedError", "MultipurposeDescriptor",
           "revise_with_langevin"]
