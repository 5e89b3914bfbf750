"""Baselines trained and evaluated in the same harness as CoopHash."""

from coophash_keras.baselines.dsh_gan import DSHGAN
from coophash_keras.baselines.supervised import SupervisedHashNet

__all__ = ["DSHGAN", "SupervisedHashNet"]
