"""Multipurpose descriptor: shared base f0 and four light heads (energy, inference, class, hash)."""

import keras
from keras import layers

from coophash_keras.layers import ClassifierHead, ConvBaseNetwork, EnergyHead, HashHead, InferenceHead


@keras.saving.register_keras_serializable(package="coophash")
class MultipurposeDescriptor(layers.Layer):
    """Inputs are normalised images in [-1, 1]; every method returns one head's view of them."""

    def __init__(self, image_shape, num_classes, num_bits, latent_dim, base_filters=32,
                 feature_dim=128, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes, self.num_bits, self.latent_dim = int(num_classes), int(num_bits), int(latent_dim)
        self.base_filters, self.feature_dim = int(base_filters), int(feature_dim)
        self.base = ConvBaseNetwork(self.image_shape, self.base_filters, self.feature_dim, name="base")
        # Heads compute in float32 whatever the global policy: under mixed_float16 only the base runs
        # in float16, while energies (and so Langevin's drift), codes and losses stay float32.
        self.energy_head = EnergyHead(self.num_classes, hidden_dim=self.feature_dim, name="energy_head",
                                      dtype="float32")
        self.inference_head = InferenceHead(self.latent_dim, name="inference_head", dtype="float32")
        self.classifier_head = ClassifierHead(self.num_classes, name="classifier_head", dtype="float32")
        self.hash_head = HashHead(self.num_bits, name="hash_head", dtype="float32")

    def build(self, input_shape=None):
        self.base.build((None,) + self.image_shape)
        feature_shape = (None, self.feature_dim)
        for head in (self.energy_head, self.inference_head, self.classifier_head, self.hash_head):
            head.build(feature_shape)
        self.built = True

    # Variables updated by the descriptor optimizer: everything but the inference head, which is
    # trained with the generator by the variational (VAE) loss.
    @property
    def descriptor_variables(self):
        return (self.base.trainable_variables + self.energy_head.trainable_variables
                + self.classifier_head.trainable_variables + self.hash_head.trainable_variables)

    def features(self, x):
        return self.base(x)

    def class_energies(self, x):
        return self.energy_head(self.base(x))

    def energy(self, x, labels_multi_hot):
        """f_E(x, c): higher means more likely under p(x | c) (Eq. 3)."""
        return EnergyHead.select(self.energy_head(self.base(x)), labels_multi_hot)

    def call(self, x):
        """All heads at once: dict of features, class_energies, z_mean, z_log_var, logits, hash."""
        f = self.base(x)
        z_mean, z_log_var = self.inference_head(f)
        return {"features": f, "class_energies": self.energy_head(f), "z_mean": z_mean,
                "z_log_var": z_log_var, "logits": self.classifier_head(f), "hash": self.hash_head(f)}

    def get_config(self):
        config = super().get_config()
        config.update(image_shape=list(self.image_shape), num_classes=self.num_classes,
                      num_bits=self.num_bits, latent_dim=self.latent_dim,
                      base_filters=self.base_filters, feature_dim=self.feature_dim)
        return config
