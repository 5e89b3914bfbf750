"""Shared bottom-up base network f0: the one trunk every method of the package uses."""

import math

import keras
from keras import layers

POOLING = ("stride", "max", "avg")


def num_downsamplings(height: int, width: int, min_size: int = 4) -> int:
    """How many 2x downsamplings bring the smaller side down to about `min_size`.

    8x8 -> 1, 28x28 -> 3, 32x32 -> 3, 64x64 -> 4. The generator mirrors the same count.
    """
    n, side = 0, min(height, width)
    while side > min_size:
        side = math.ceil(side / 2)
        n += 1
    return n


@keras.saving.register_keras_serializable(package="coophash")
class ConvBaseNetwork(layers.Layer):
    """f0(x): a 3x3 stem conv, then one block per 2x downsampling (`convs_per_block` 3x3 convs
    whose channels double per block, capped at 256; the downsampling is a stride-2 conv, or a max
    or average pool), then a dense feature vector with optional dropout.

    Leaky ReLU throughout and no normalisation layers, so the energy CoopHash reads through it is
    a smooth function of the image for Langevin dynamics (the CoopNets descriptors use no
    BatchNorm either); the same trunk serves every baseline so that methods differ only in how
    they learn."""

    def __init__(
        self,
        image_shape,
        base_filters=32,
        feature_dim=128,
        pooling="stride",
        convs_per_block=1,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.base_filters = int(base_filters)
        self.feature_dim = int(feature_dim)
        self.pooling = pooling
        self.convs_per_block = int(convs_per_block)
        self.dropout_rate = float(dropout)
        h, w, _ = self.image_shape
        self.num_downsamplings = num_downsamplings(h, w)
        self.stem = layers.Conv2D(self.base_filters, 3, padding="same", name="stem")
        self.block_layers = []
        filters = self.base_filters
        for i in range(self.num_downsamplings):
            filters = min(filters * 2, 256)
            block = [
                layers.Conv2D(filters, 3, padding="same", name=f"block_{i}_conv_{j}")
                for j in range(self.convs_per_block - (pooling == "stride"))
            ]
            if pooling == "stride":
                block.append(layers.Conv2D(filters, 4, strides=2, padding="same", name=f"down_{i}"))
            else:
                pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
                block.append(pool(2, padding="same", name=f"pool_{i}"))
            self.block_layers.append(block)
        self.flatten = layers.Flatten()
        self.features = layers.Dense(self.feature_dim, name="features")
        self.dropout = layers.Dropout(self.dropout_rate) if self.dropout_rate else None

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        for block in self.block_layers:
            for layer in block:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        self.flatten.build(shape)
        self.features.build(self.flatten.compute_output_shape(shape))
        self.built = True

    @property
    def map_dim(self):
        """Width of `feature_map`: the last block's map, flattened."""
        side_h, side_w = self.image_shape[:2]
        for _ in range(self.num_downsamplings):
            side_h, side_w = -(-side_h // 2), -(-side_w // 2)
        return side_h * side_w * min(self.base_filters * 2**self.num_downsamplings, 256)

    def feature_map(self, x):
        """The last block's activations, flattened: f0 before its dense feature layer."""
        x = keras.ops.leaky_relu(self.stem(x), 0.2)
        for block in self.block_layers:
            for layer in block:
                x = layer(x)
                if isinstance(layer, layers.Conv2D):
                    x = keras.ops.leaky_relu(x, 0.2)
        return self.flatten(x)

    def call(self, x, training=False):
        x = keras.ops.leaky_relu(self.features(self.feature_map(x)), 0.2)
        if self.dropout is not None:
            x = self.dropout(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            base_filters=self.base_filters,
            feature_dim=self.feature_dim,
            pooling=self.pooling,
            convs_per_block=self.convs_per_block,
            dropout=self.dropout_rate,
        )
        return config
