"""Baselines trained, exported and served in the same harness as CoopHash (see coophash_keras.registry)."""
