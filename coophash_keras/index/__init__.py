"""Binary-code search: HammingIndex (exact C scan on all cores, or FAISS), persisted and mmap-able."""

from coophash_keras.index.hamming_index import BACKENDS, HammingIndex

__all__ = ["BACKENDS", "HammingIndex"]
