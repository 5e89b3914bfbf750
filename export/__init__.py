"""Export a trained CoopHash hash function as a TF-Serving SavedModel. Imports no training code."""

from export.saved_model import export_saved_model, hamming_topk, load_descriptor, next_version, write_models_config

__all__ = ["export_saved_model", "hamming_topk", "load_descriptor", "next_version", "write_models_config"]
