"""Multipurpose descriptor: shared base f0 and four light heads (energy, inference, class, hash).

Synthesis resolution. CoopHash's generator and Langevin revision (and DSH-GAN's generator) may work
at a smaller size than the images (`synthesis_shape`, config.synthesis_size; by default 32 px with
a pretrained backbone, whose 96-224 px input would make them slow). The descriptor then reads
smaller images through a bilinear upsampling to the image size (`features` does it for any input
of another size, so Langevin's gradient flows back through it to the small image), and scores
real images for the energy as `synthetic_view(x)`: resized down to the synthesis size and back up,
so that real and synthetic images differ in content, not in sharpness (an energy, or an
adversary, would otherwise learn "blurry = synthetic" and teach the generator nothing else).
Codes and class read-outs always see the full-resolution image. With the synthesis size equal to
the image size (the conv base's default) every one of these is the identity.
"""

import keras
from keras import layers, ops

from coophash_keras.layers.codebooks import orthohash_codebook
from coophash_keras.layers import (
    ClassifierHead,
    CodebookClassifierHead,
    EnergyHead,
    HashHead,
    InferenceHead,
    PairGenerator,
    base_kwargs_of,
    make_base_network,
)
from coophash_keras.models.networks import base_network_kwargs, energy_score, synthesis_shape


CLASSIFIER_INPUTS = ("features", "codes", "codebook")
SERVED_ENERGIES = ("energy_head", "class_free_energy", "min_z")


def resize(x, size, antialias=False):
    """Bilinear resize of [B, H, W, C] to size (h, w); x itself when it already has that size."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return ops.image.resize(x, tuple(size), interpolation="bilinear", antialias=antialias)


@keras.saving.register_keras_serializable(package="coophash")
class MultipurposeDescriptor(layers.Layer):
    """Inputs are normalised images in [-1, 1]; every method returns one head's view of them.
    CoopHash's descriptor and DSH-GAN's shared CNN with its streams (see models/networks.py for
    the interface export and serving read). `synthesis_shape`: see the module docstring (None =
    the image shape)."""

    def __init__(
        self,
        base_kwargs,
        num_classes,
        num_bits,
        latent_dim,
        classifier_input="features",
        synthesis_shape=None,
        codebook=None,
        readout_scale=8.0,
        energy_reads_dropout=True,
        inference_reads_map=False,
        served_energy="energy_head",
        multi_label=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.multi_label = bool(multi_label)  # which free energy 'class_free_energy' is (energy_score)
        if served_energy not in SERVED_ENERGIES:
            raise ValueError(f"served_energy must be one of {SERVED_ENERGIES}, got {served_energy!r}")
        self.served_energy = served_energy
        self.score_statistics = None  # built with served_energy 'min_z' (build)
        if classifier_input not in CLASSIFIER_INPUTS:
            raise ValueError(f"classifier_input must be one of {CLASSIFIER_INPUTS}, got {classifier_input!r}")
        self.classifier_input, self.readout_scale = classifier_input, float(readout_scale)
        self.energy_reads_dropout = bool(energy_reads_dropout)
        self.inference_reads_map = bool(inference_reads_map)
        self.base_kwargs = dict(base_kwargs)
        self.num_classes, self.num_bits, self.latent_dim = int(num_classes), int(num_bits), int(latent_dim)
        self.base = make_base_network(self.base_kwargs, name="base")
        self.image_shape = tuple(self.base.image_shape)
        self.synthesis_shape = tuple(int(d) for d in (synthesis_shape or self.image_shape))
        self.feature_dim = self.base.feature_dim
        # Heads compute in float32 whatever the global policy: under mixed_float16 only the base runs
        # in float16, while energies (and so Langevin's drift), codes and losses stay float32.
        self.energy_head = EnergyHead(self.num_classes, hidden_dim=self.feature_dim, name="energy_head", dtype="float32")
        self.inference_head = InferenceHead(self.latent_dim, name="inference_head", dtype="float32")
        if classifier_input == "codebook":  # `codebook` None: its values come with loaded weights
            self.classifier_head = CodebookClassifierHead(
                self.num_classes, self.num_bits, self.readout_scale, codebook, name="classifier_head", dtype="float32"
            )
        else:
            self.classifier_head = ClassifierHead(self.num_classes, name="classifier_head", dtype="float32")
        self.hash_head = HashHead(self.num_bits, name="hash_head", dtype="float32")

    def build(self, input_shape=None):
        self.base.build((None,) + self.image_shape)
        feature_shape = (None, self.feature_dim)
        for head in (self.energy_head, self.hash_head):
            head.build(feature_shape)
        self.inference_head.build((None, self.base.map_dim) if self.inference_reads_map else feature_shape)
        self.classifier_head.build(feature_shape if self.classifier_input == "features" else (None, self.num_bits))
        self.score_statistics = None
        if self.served_energy == "min_z":
            # rows (energy head, free energy), columns (mean, std) on the training images; saved and
            # exported with the weights (CoopHash.fit_score_statistics sets them)
            self.score_statistics = self.add_weight(
                shape=(2, 2),
                initializer=keras.initializers.Constant([[0.0, 1.0], [0.0, 1.0]]),
                trainable=False,
                name="score_statistics",
            )
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

    @property
    def synthesizes_smaller(self) -> bool:
        return self.synthesis_shape[:2] != self.image_shape[:2]

    def to_image_size(self, x):
        """Images of any size (e.g. the synthesis size) -> the image size (bilinear)."""
        return resize(x, self.image_shape[:2])

    def synthetic_view(self, x):
        """Real images as the energy sees synthetic ones: down to the synthesis size and back."""
        if not self.synthesizes_smaller:
            return x
        return self.to_image_size(resize(x, self.synthesis_shape[:2], antialias=True))

    def features(self, x, training=False):
        return self.base(self.to_image_size(x), training=training)

    def _features_and_dropped(self, x, training):
        """f0(x) without dropout, and with it when training (the base applies dropout last)."""
        f = self.base(self.to_image_size(x), training=False)
        dropout = getattr(self.base, "dropout", None)
        return f, (dropout(f, training=True) if training and dropout is not None else f)

    def class_energies(self, x, training=False):
        """e(x) [B, C]; read without dropout unless energy_reads_dropout, so that the likelihood
        term trains the very function Langevin follows."""
        return self.energy_head(self.features(x, training=training and self.energy_reads_dropout))

    def energy(self, x, labels_multi_hot):
        """f_E(x, c): higher means more likely under p(x | c) (Eq. 3). No dropout: Langevin
        follows one deterministic energy. x at the image or the synthesis size."""
        return EnergyHead.select(self.energy_head(self.features(x)), labels_multi_hot)

    def relaxed_codes(self, x, training=False):
        return self.hash_head(self.features(x, training=training))

    def class_logits(self, features, relaxed_codes):
        """p(c|x) logits, read from f0's features (the paper's discriminative head) or, with
        classifier_input 'codes' or 'codebook', from the relaxed codes (classification through the
        codes)."""
        return self.classifier_head(features if self.classifier_input == "features" else relaxed_codes)

    def serving_outputs(self, x):
        """What export and serving read, for normalised images x.

        Returns:
            A dict of `relaxed_codes` [N, K], `class_logits` [N, C], `energy_head` [N] (the
            label-free energy log sum_c exp f_E(x, c), read from `synthetic_view(x)` as in
            training: one more base pass when the synthesis size is below the image size), and
            `energy` [N], the served OOD score (higher = more like the training data): the
            energy head's; with served_energy 'class_free_energy' the free energy of the class
            logits (`energy_score`: log sum_c exp, or sum_c softplus when multi-label); with
            'min_z' the smaller of the two as z-scores by `score_statistics`.
        """
        f = self.features(x)
        f_energy = self.features(self.synthetic_view(x)) if self.synthesizes_smaller else f
        codes = self.hash_head(f)
        logits = self.class_logits(f, codes)
        energy_head = ops.logsumexp(self.energy_head(f_energy), axis=-1)
        free_energy = energy_score(logits, self.multi_label)
        served = {"energy_head": energy_head, "class_free_energy": free_energy}.get(self.served_energy)
        if self.served_energy == "min_z":
            stats = self.score_statistics
            served = ops.minimum(
                (energy_head - stats[0, 0]) / stats[0, 1], (free_energy - stats[1, 0]) / stats[1, 1]
            )
        return {"relaxed_codes": codes, "class_logits": logits, "energy": served, "energy_head": energy_head}

    def inference_features(self, x):
        """What the inference head reads: f0(x), or with inference_reads_map f0's last map before its
        dense feature layer (which keeps more of what varies within a class)."""
        if self.inference_reads_map:
            return self.base.feature_map(self.to_image_size(x))
        return self.features(x)

    def infer_latent(self, x, features=None):
        """q(z|x): (mean, log-variance) of the generator's latent for images x; `features`: their
        `inference_features`, if already computed."""
        return self.inference_head(self.inference_features(x) if features is None else features)

    def call(self, x, training=False):
        """The heads every step reads at once: dict of features, class_energies, logits, hash
        (the inference head is read by `infer_latent`)."""
        clean, f = self._features_and_dropped(x, training)
        codes = self.hash_head(f)
        return {
            "features": f,
            "class_energies": self.energy_head(f if self.energy_reads_dropout else clean),
            "logits": self.class_logits(f, codes),
            "hash": codes,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            base_kwargs=base_kwargs_of(self.base),
            num_classes=self.num_classes,
            num_bits=self.num_bits,
            latent_dim=self.latent_dim,
            classifier_input=self.classifier_input,
            synthesis_shape=list(self.synthesis_shape),
            readout_scale=self.readout_scale,
            energy_reads_dropout=self.energy_reads_dropout,
            inference_reads_map=self.inference_reads_map,
            served_energy=self.served_energy,
            multi_label=self.multi_label,
        )
        return config


def descriptor_and_generator(config):
    """The two networks of the generative models (CoopHash, DSH-GAN): the multipurpose descriptor
    (saved as "descriptor") and the pair generator, both at the config's synthesis size."""
    c = config
    descriptor = MultipurposeDescriptor(
        base_network_kwargs(c),
        c.num_classes,
        c.num_bits,
        c.latent_dim,
        classifier_input=c.classifier_input,
        synthesis_shape=synthesis_shape(c),
        codebook=orthohash_codebook(c.num_classes, c.num_bits, c.seed) if c.classifier_input == "codebook" else None,
        readout_scale=c.orthohash_scale,
        energy_reads_dropout=c.energy_dropout,
        inference_reads_map=c.inference_features == "map",
        multi_label=c.multi_label,
        name="descriptor",
    )
    generator = PairGenerator(
        synthesis_shape(c),
        c.latent_dim,
        c.num_classes,
        c.generator_filters,
        name="generator",
    )
    return descriptor, generator
