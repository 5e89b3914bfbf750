"""Shared bottom-up base network f0 of the multipurpose descriptor."""

import math

import keras
from keras import layers


def num_downsamplings(height: int, width: int, min_size: int = 4) -> int:
    """How many stride-2 convolutions bring the smaller side down to about `min_size`.

    8x8 -> 1, 28x28 -> 3, 32x32 -> 3, 64x64 -> 4. The generator mirrors the same count.
    """
    n, side = 0, min(height, width)
    while side > min_size:
        side = math.ceil(side / 2)
        n += 1
    return n


@keras.saving.register_keras_serializable(package="coophash")
class ConvBaseNetwork(layers.Layer):
    """f0(x): conv 3x3, then stride-2 4x4 convs (channels doubling, capped at 256), then a dense
    feature vector. Leaky ReLU throughout and no normalisation layers, so the energy is a smooth
    function of the image for Langevin dynamics (the CoopNets descriptors use no BatchNorm either)."""

    def __init__(self, image_shape, base_filters=32, feature_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.base_filters = int(base_filters)
        self.feature_dim = int(feature_dim)
        h, w, _ = self.image_shape
        self.num_downsamplings = num_downsamplings(h, w)
        self.stem = layers.Conv2D(self.base_filters, 3, padding="same", name="stem")
        self.down_convs = []
        filters = self.base_filters
        for i in range(self.num_downsamplings):
            filters = min(filters * 2, 256)
            self.down_convs.append(layers.Conv2D(filters, 4, strides=2, padding="same", name=f"down_{i}"))
        self.flatten = layers.Flatten()
        self.features = layers.Dense(self.feature_dim, name="features")

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        for conv in self.down_convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.flatten.build(shape)
        self.features.build(self.flatten.compute_output_shape(shape))
        self.built = True

    def call(self, x):
        x = keras.ops.leaky_relu(self.stem(x), 0.2)
        for conv in self.down_convs:
            x = keras.ops.leaky_relu(conv(x), 0.2)
        return keras.ops.leaky_relu(self.features(self.flatten(x)), 0.2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)

    def get_config(self):
        config = super().get_config()
        config.update(image_shape=list(self.image_shape), base_filters=self.base_filters, feature_dim=self.feature_dim)
        return config
