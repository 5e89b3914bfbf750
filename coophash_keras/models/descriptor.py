"""Multipurpose descriptor: shared base f0 and four light heads (energy, inference, class, hash)."""

import keras
from keras import layers, ops

from coophash_keras.layers import ClassifierHead, ConvBaseNetwork, EnergyHead, HashHead, InferenceHead


@keras.saving.register_keras_serializable(package="coophash")
class MultipurposeDescriptor(layers.Layer):
    """Inputs are normalised images in [-1, 1]; every method returns one head's view of them.
    CoopHash's descriptor and DSH-GAN's shared CNN with its streams (see models/networks.py for
    the interface export and serving read)."""

    def __init__(self, base_kwargs, num_classes, num_bits, latent_dim, classifier_input="features", **kwargs):
        super().__init__(**kwargs)
        if classifier_input not in ("features", "codes"):
            raise ValueError(f"classifier_input must be 'features' or 'codes', got {classifier_input!r}")
        self.classifier_input = classifier_input
        self.base_kwargs = dict(base_kwargs)
        self.num_classes, self.num_bits, self.latent_dim = int(num_classes), int(num_bits), int(latent_dim)
        self.base = ConvBaseNetwork(**self.base_kwargs, name="base")
        self.feature_dim = self.base.feature_dim
        # Heads compute in float32 whatever the global policy: under mixed_float16 only the base runs
        # in float16, while energies (and so Langevin's drift), codes and losses stay float32.
        self.energy_head = EnergyHead(self.num_classes, hidden_dim=self.feature_dim, name="energy_head", dtype="float32")
        self.inference_head = InferenceHead(self.latent_dim, name="inference_head", dtype="float32")
        self.classifier_head = ClassifierHead(self.num_classes, name="classifier_head", dtype="float32")
        self.hash_head = HashHead(self.num_bits, name="hash_head", dtype="float32")

    def build(self, input_shape=None):
        self.base.build((None,) + tuple(self.base_kwargs["image_shape"]))
        feature_shape = (None, self.feature_dim)
        for head in (self.energy_head, self.inference_head, self.hash_head):
            head.build(feature_shape)
        self.classifier_head.build(feature_shape if self.classifier_input == "features" else (None, self.num_bits))
        self.built = True

    # Variables updated by the descriptor optimizer: everything but the inference head, which is
    # trained with the generator by the variational (VAE) loss.
    @property
    def descriptor_variables(self):
        return (
            self.base.trainable_variables
            + self.energy_head.trainable_variables
            + self.classifier_head.trainable_variables
            + self.hash_head.trainable_variables
        )

    def features(self, x, training=False):
        return self.base(x, training=training)

    def class_energies(self, x, training=False):
        return self.energy_head(self.base(x, training=training))

    def energy(self, x, labels_multi_hot):
        """f_E(x, c): higher means more likely under p(x | c) (Eq. 3). No dropout: Langevin
        follows one deterministic energy."""
        return EnergyHead.select(self.energy_head(self.base(x)), labels_multi_hot)

    def relaxed_codes(self, x, training=False):
        return self.hash_head(self.features(x, training=training))

    def class_logits(self, features, relaxed_codes):
        """p(c|x) logits, read from f0's features (the paper's discriminative head) or, with
        classifier_input='codes', from the relaxed codes (classification through the codes)."""
        return self.classifier_head(features if self.classifier_input == "features" else relaxed_codes)

    def serving_outputs(self, x):
        """Codes, class logits and the label-free energy log sum_c exp f_E(x, c) (an OOD score)."""
        f = self.features(x)
        codes = self.hash_head(f)
        return {
            "relaxed_codes": codes,
            "class_logits": self.class_logits(f, codes),
            "energy": ops.logsumexp(self.energy_head(f), axis=-1),
        }

    def call(self, x, training=False):
        """All heads at once: dict of features, class_energies, z_mean, z_log_var, logits, hash."""
        f = self.base(x, training=training)
        z_mean, z_log_var = self.inference_head(f)
        codes = self.hash_head(f)
        return {
            "features": f,
            "class_energies": self.energy_head(f),
            "z_mean": z_mean,
            "z_log_var": z_log_var,
            "logits": self.class_logits(f, codes),
            "hash": codes,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            base_kwargs={**self.base_kwargs, "image_shape": list(self.base_kwargs["image_shape"])},
            num_classes=self.num_classes,
            num_bits=self.num_bits,
            latent_dim=self.latent_dim,
            classifier_input=self.classifier_input,
        )
        return config
