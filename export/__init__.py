"""Export a trained hashing model as a TF-Serving SavedModel. Imports no training code."""

from coophash_keras.export.module import SIGNATURES, HashingExportModule, hamming_topk
from coophash_keras.export.saved_model import export_saved_model, next_version, write_models_config
from coophash_keras.export.weights import load_hashing_network

__all__ = [
    "SIGNATURES",
    "HashingExportModule",
    "export_saved_model",
    "hamming_topk",
    "load_hashing_network",
    "next_version",
    "write_models_config",
]
