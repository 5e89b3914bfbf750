"""Contrastive pair generator g(concat(z, c)) -> image in [-1, 1]."""

import keras
from keras import layers, ops

from coophash_keras.layers.base_network import num_downsamplings


@keras.saving.register_keras_serializable(package="coophash")
class PairGenerator(layers.Layer):
    """Top-down decoder: dense to a small map, stride-2 transposed convs mirroring f0, a 3x3 conv
    to the image channels, tanh, and a centre crop to (H, W) for sizes that are not powers of 2.

    Called with the SAME z and two label vectors it yields the contrastive pair
    x+ = g(z, c+), x- = g(z, c-) of Eq. 1."""

    def __init__(self, image_shape, latent_dim, num_classes, filters=64, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.filters = int(filters)
        h, w, c = self.image_shape
        n = num_downsamplings(h, w)
        self.start_h, self.start_w = -(-h // 2**n), -(-w // 2**n)
        self.project = layers.Dense(self.start_h * self.start_w * self.filters, name="project")
        self.up_convs = []
        f = self.filters
        for i in range(n):
            f = max(f // 2, 16)
            self.up_convs.append(layers.Conv2DTranspose(f, 4, strides=2, padding="same", name=f"up_{i}"))
        self.to_image = layers.Conv2D(c, 3, padding="same", name="to_image")
        self.full_h, self.full_w = self.start_h * 2**n, self.start_w * 2**n

    def build(self, input_shapes=None):
        b = None
        self.project.build((b, self.latent_dim + self.num_classes))
        shape = (b, self.start_h, self.start_w, self.filters)
        for conv in self.up_convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.to_image.build(shape)
        self.built = True

    def call(self, z, labels):
        """z: [B, latent_dim]; labels: one-/multi-hot [B, num_classes] (float)."""
        h = self.project(ops.concatenate([z, ops.cast(labels, z.dtype)], axis=-1))
        h = ops.leaky_relu(ops.reshape(h, (-1, self.start_h, self.start_w, self.filters)), 0.2)
        for conv in self.up_convs:
            h = ops.leaky_relu(conv(h), 0.2)
        x = ops.cast(ops.tanh(self.to_image(h)), "float32")  # images (and Langevin) stay float32
        H, W, _ = self.image_shape
        top, left = (self.full_h - H) // 2, (self.full_w - W) // 2
        return x[:, top : top + H, left : left + W, :]

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            latent_dim=self.latent_dim,
            num_classes=self.num_classes,
            filters=self.filters,
        )
        return config
