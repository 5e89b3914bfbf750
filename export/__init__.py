"""Export a trained hashing model as a TF-Serving SavedModel. Imports no training code."""

from export.module import SIGNATURES, HashingExportModule, hamming_topk
from export.saved_model import export_saved_model, next_version, write_models_config
from export.weights import load_hashing_network

__all__ = [
    "SIGNATURES",
    "HashingExportModule",
    "export_saved_model",
    "hamming_topk",
    "load_hashing_network",
    "next_version",
    "write_models_config",
]
