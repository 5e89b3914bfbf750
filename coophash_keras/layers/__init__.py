from coophash_keras.layers.backbone import BackboneBaseNetwork
from coophash_keras.layers.base_network import ConvBaseNetwork, num_downsamplings
from coophash_keras.layers.bases import base_kwargs_of, make_base_network, restoring_base, uses_backbone
from coophash_keras.layers.generator import PairGenerator
from coophash_keras.layers.heads import (
    ClassifierHead,
    CodebookClassifierHead,
    EnergyHead,
    HashHead,
    InferenceHead,
    cosine_to_rows,
)

__all__ = [
    "BackboneBaseNetwork",
    "ConvBaseNetwork",
    "base_kwargs_of",
    "make_base_network",
    "restoring_base",
    "uses_backbone",
    "num_downsamplings",
    "PairGenerator",
    "ClassifierHead",
    "CodebookClassifierHead",
    "EnergyHead",
    "HashHead",
    "InferenceHead",
    "cosine_to_rows",
]
