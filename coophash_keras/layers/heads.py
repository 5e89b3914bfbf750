"""The four light heads of the multipurpose descriptor, each reading f0(x) (the classifier head,
with classification through the codes, reads the relaxed codes: a Dense layer or a codebook)."""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="coophash")
class EnergyHead(layers.Layer):
    """h_E: features -> one (negative) energy per class; f_E(x, c) = <c, e(x)> / |c|.

    Class-indexed energies (ours; the paper only says f_E = h_E(c, f0(x))) make f_E(x, c) one
    dot product for one-hot and multi-hot c alike, and give the label-free OOD score
    logsumexp_c e_c(x) at serving time. Higher f_E = more likely (Eq. 3)."""

    def __init__(self, num_classes, hidden_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.hidden_dim = int(hidden_dim)
        self.hidden = layers.Dense(self.hidden_dim, name="hidden", dtype=self.dtype_policy)
        self.out = layers.Dense(self.num_classes, name="class_energies", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.hidden.build(input_shape)
        self.out.build((input_shape[0], self.hidden_dim))
        self.built = True

    def call(self, features):
        """Per-class energies e(x), shape [B, num_classes]."""
        return self.out(ops.leaky_relu(self.hidden(features), 0.2))

    @staticmethod
    def select(class_energies, labels_multi_hot):
        """f_E(x, c) for a (multi-)hot c: the mean of the energies of the classes in c."""
        c = ops.cast(labels_multi_hot, class_energies.dtype)
        return ops.sum(class_energies * c, axis=-1) / ops.maximum(ops.sum(c, axis=-1), 1.0)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, hidden_dim=self.hidden_dim)
        return config


@keras.saving.register_keras_serializable(package="coophash")
class InferenceHead(layers.Layer):
    """q(z|x): mean and log-variance of the generator's latent (the VAE encoder of variational
    MCMC teaching, here a head of the descriptor as in the paper)."""

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.mean = layers.Dense(self.latent_dim, name="z_mean", dtype=self.dtype_policy)
        self.log_var = layers.Dense(self.latent_dim, name="z_log_var", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.mean.build(input_shape)
        self.log_var.build(input_shape)
        self.built = True

    def call(self, features):
        # Bound log-variance: exp() of an unbounded output is the usual source of NaN in VAEs.
        return self.mean(features), ops.clip(self.log_var(features), -10.0, 10.0)

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim)
        return config


@keras.saving.register_keras_serializable(package="coophash")
class ClassifierHead(layers.Layer):
    """p(c|x): class logits (softmax for single-label data, sigmoid for multi-label)."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.logits = layers.Dense(self.num_classes, name="logits", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.logits.build(input_shape)
        self.built = True

    def call(self, features):
        return self.logits(features)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


def cosine_to_rows(vectors, rows):
    """cos(v_i, o_c) for every vector of [B, K] and row of [C, K] -> [B, C]."""
    v = vectors / (ops.norm(vectors, axis=-1, keepdims=True) + 1e-12)
    o = rows / (ops.norm(rows, axis=-1, keepdims=True) + 1e-12)
    return ops.matmul(v, ops.transpose(o))


@keras.saving.register_keras_serializable(package="coophash")
class CodebookClassifierHead(layers.Layer):
    """p(c|x) logits read from the relaxed codes as scale * cos(codes, o_c) against fixed +-1 class
    codewords O [C, K]: OrthoHash's read-out (the best pointwise baseline here) for CoopHash's
    classification through the codes. O is a non-trainable weight, so it travels with the weights;
    `codebook` None: its values come with loaded weights."""

    def __init__(self, num_classes, num_bits, scale=8.0, codebook=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.num_bits, self.scale = int(num_classes), int(num_bits), float(scale)
        if codebook is not None:
            codebook = np.asarray(codebook, np.float32)
            if codebook.shape != (self.num_classes, self.num_bits):
                raise ValueError(f"codebook must be [{self.num_classes}, {self.num_bits}], got {codebook.shape}")
        self._initial_codebook = codebook
        self.codebook = None

    def build(self, input_shape):
        self.codebook = self.add_weight(
            shape=(self.num_classes, self.num_bits),
            initializer=keras.initializers.Constant(0.0 if self._initial_codebook is None else self._initial_codebook),
            trainable=False,
            name="codebook",
        )
        self.built = True

    def call(self, relaxed_codes):
        return self.scale * cosine_to_rows(relaxed_codes, self.codebook)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, num_bits=self.num_bits, scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="coophash")
class HashHead(layers.Layer):
    """K real outputs relaxed with tanh; codes are their signs (sign(0) := +1)."""

    def __init__(self, num_bits, **kwargs):
        super().__init__(**kwargs)
        if int(num_bits) <= 0 or int(num_bits) % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits}")
        self.num_bits = int(num_bits)
        self.projection = layers.Dense(self.num_bits, name="pre_activation", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.built = True

    def pre_activation(self, features):
        return self.projection(features)

    def call(self, features):
        return ops.tanh(self.projection(features))

    def get_config(self):
        config = super().get_config()
        config.update(num_bits=self.num_bits)
        return config
