from coophash_keras.layers.base_network import ConvBaseNetwork, num_downsamplings
from coophash_keras.layers.generator import PairGenerator
from coophash_keras.layers.heads import ClassifierHead, EnergyHead, HashHead, InferenceHead

__all__ = [
    "ConvBaseNetwork",
    "num_downsamplings",
    "PairGenerator",
    "ClassifierHead",
    "EnergyHead",
    "HashHead",
    "InferenceHead",
]
