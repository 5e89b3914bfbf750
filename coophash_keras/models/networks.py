"""The inference networks: what export, serving and `encode` read. Training code stays out.

Every hashing model keeps one of these as `model.hash_network`. Each takes images normalised to
[-1, 1] and offers
  relaxed_codes(x)    K real outputs whose signs are the codes;
  serving_outputs(x)  {"relaxed_codes", "class_logits" [N, C], "energy" [N]}: the exported
                      signatures return codes, packed codes, class probabilities and the energy
                      (an out-of-distribution score, higher = more like the training data);
                      the descriptor also gives "energy_head" (CoopHash serves either, see
                      config.served_energy).

`MultipurposeDescriptor` (models/descriptor.py) is CoopHash's and DSH-GAN's. `HashNetwork` here
is the pointwise baselines': the shared base f0, a hash layer, and a class read-out. The base is
the conv base or a pretrained backbone (layers/bases.py), whichever the config names.
"""

import keras
import numpy as np
from keras import layers, ops

from coophash_keras.layers import CodebookClassifierHead, base_kwargs_of, cosine_to_rows, make_base_network

HASH_LAYERS = ("tanh", "batchnorm", "linear")
CLASS_READOUTS = ("codes", "codebook")


def base_network_kwargs(config):
    """The shared base's arguments from a CoopHashConfig (one place for every model): the
    ConvBaseNetwork's, or with `config.backbone` a BackboneBaseNetwork's (layers/bases.py)."""
    if config.backbone != "none":
        return dict(
            image_shape=config.image_shape,
            backbone=config.backbone,
            weights=None if config.backbone_weights == "none" else config.backbone_weights,
            feature_dim=config.feature_dim,
            dropout=config.base_dropout,
        )
    return dict(
        image_shape=config.image_shape,
        base_filters=config.base_filters,
        feature_dim=config.feature_dim,
        pooling=config.base_pooling,
        convs_per_block=config.base_convs_per_block,
        dropout=config.base_dropout,
    )


SYNTHESIS_SIZE_WITH_BACKBONE = 32


def synthesis_shape(config):
    """(h, w, C) of the images CoopHash's and DSH-GAN's generator makes and Langevin revises:
    the image shape scaled so that its smaller side is config.synthesis_size (default: the image
    size with the conv base, 32 px with a backbone), never above the image size."""
    h, w, c = config.image_shape
    side = config.synthesis_size
    if side is None:
        side = SYNTHESIS_SIZE_WITH_BACKBONE if config.backbone != "none" else min(h, w)
    scale = min(1.0, side / min(h, w))
    return (max(4, round(h * scale)), max(4, round(w * scale)), c)


def energy_score(class_logits, multi_label=False):
    """The free energy of the class likelihood: the OOD score a classifier gives without an energy
    head (Liu et al., NeurIPS 2020); higher = more like the training data.

    Single-label (softmax): log sum_c exp(l_c). Multi-label (independent sigmoids): the likelihood's
    partition function runs over every label set y in {0, 1}^C, log sum_y exp(sum_c y_c l_c) =
    sum_c softplus(l_c), JointEnergy (Wang et al., NeurIPS 2021). The softmax form on sigmoid logits
    is not that model's free energy: it is dominated by the one largest logit, so a mosaic with one
    confident item scores like one with four.

    Args:
        class_logits: [N, C] logits.
        multi_label: whether the logits are independent sigmoids' (config.multi_label).

    Returns:
        [N] scores.
    """
    if multi_label:
        return ops.sum(ops.softplus(class_logits), axis=-1)
    return ops.logsumexp(class_logits, axis=-1)


@keras.saving.register_keras_serializable(package="coophash")
class HashNetwork(layers.Layer):
    """f0 -> hash layer (K outputs) -> class read-out.

    hash_layer: 'tanh' (Dense + tanh: classification through codes, CSQ, triplet), 'batchnorm'
    (Dense without bias + BatchNorm: OrthoHash), 'linear' (Dense without bias: DPN).
    class_readout: 'codes' (a Dense layer on the relaxed codes: classification through the codes),
    or 'codebook' (scale * cosine to fixed +-1 class codewords, a non-trainable weight: OrthoHash's
    codebook, CSQ's hash centres, DPN's targets)."""

    def __init__(
        self,
        base_kwargs,
        num_classes,
        num_bits,
        hash_layer="tanh",
        class_readout="codes",
        codebook=None,
        readout_scale=8.0,
        multi_label=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.multi_label = bool(multi_label)  # which free energy `energy` is (energy_score)
        if hash_layer not in HASH_LAYERS:
            raise ValueError(f"hash_layer must be one of {HASH_LAYERS}, got {hash_layer!r}")
        if class_readout not in CLASS_READOUTS:
            raise ValueError(f"class_readout must be one of {CLASS_READOUTS}, got {class_readout!r}")
        self.base_kwargs = dict(base_kwargs)
        self.num_classes, self.num_bits = int(num_classes), int(num_bits)
        self.hash_layer, self.class_readout, self.readout_scale = hash_layer, class_readout, float(readout_scale)
        self.base = make_base_network(self.base_kwargs, name="base")
        self.hash_projection = layers.Dense(
            self.num_bits, use_bias=hash_layer == "tanh", name="hash_projection", dtype="float32"
        )
        self.hash_norm = layers.BatchNormalization(name="hash_norm", dtype="float32") if hash_layer == "batchnorm" else None
        if class_readout == "codes":
            self.classifier = layers.Dense(self.num_classes, name="classifier", dtype="float32")
        else:  # `codebook` None: the values come with loaded weights
            self.classifier = CodebookClassifierHead(
                self.num_classes, self.num_bits, self.readout_scale, codebook, name="classifier", dtype="float32"
            )

    def build(self, input_shape=None):
        self.base.build((None,) + tuple(self.base.image_shape))
        feature_shape = (None, self.base.feature_dim)
        self.hash_projection.build(feature_shape)
        if self.hash_norm is not None:
            self.hash_norm.build((None, self.num_bits))
        self.classifier.build((None, self.num_bits))
        self.built = True

    @property
    def codebook(self):
        """The fixed class codewords [C, K] of a 'codebook' read-out (a weight, so export reads it
        from the .keras file like any other), None for a Dense one."""
        return self.classifier.codebook if self.class_readout == "codebook" else None

    def features(self, x, training=False):
        return self.base(x, training=training)

    def codes_from_features(self, features, training=False):
        h = self.hash_projection(features)
        if self.hash_layer == "tanh":
            return ops.tanh(h)
        if self.hash_layer == "batchnorm":
            return self.hash_norm(h, training=training)
        return h

    def class_logits_from_codes(self, relaxed_codes):
        return self.classifier(relaxed_codes)

    def cosine_to_codebook(self, relaxed_codes):
        return cosine_to_rows(relaxed_codes, self.codebook)

    def relaxed_codes(self, x, training=False):
        return self.codes_from_features(self.features(x, training=training), training=training)

    def serving_outputs(self, x):
        codes = self.relaxed_codes(x)
        logits = self.class_logits_from_codes(codes)
        return {"relaxed_codes": codes, "class_logits": logits, "energy": energy_score(logits, self.multi_label)}

    def call(self, x, training=False):
        return self.relaxed_codes(x, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            base_kwargs=base_kwargs_of(self.base),
            num_classes=self.num_classes,
            num_bits=self.num_bits,
            hash_layer=self.hash_layer,
            class_readout=self.class_readout,
            readout_scale=self.readout_scale,
            multi_label=self.multi_label,
        )
        return config  # the codebook's values travel with the weights


@keras.saving.register_keras_serializable(package="coophash")
class ProjectionHashNetwork(layers.Layer):
    """The label-free models' network (ITQ, LSH: baselines/label_free.py): features -> minus their
    mean -> a fixed linear projection to K outputs, whose signs are the codes. Nothing in it is
    trained by gradient descent: `mean` [D] and `projection` [D, K] are non-trainable weights that
    the model's closed-form `fit` sets, saved, exported and served like any other weight.

    features: the normalised pixels, flattened (D = H*W*C), or with a backbone in `base_kwargs` its
    pooled output (`BackboneBaseNetwork.feature_map`, D = the backbone's width), so an exported
    model still takes raw pixels.
    serving_outputs: class_logits are zeros [N, num_classes] (there is no class read-out: uniform
    class probabilities); energy is minus the mean squared distance of the features to their
    training mean (higher = nearer the training data)."""

    def __init__(self, image_shape, num_bits, num_classes=0, base_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        from coophash_keras.layers import uses_backbone

        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_bits, self.num_classes = int(num_bits), int(num_classes)
        self.base_kwargs = dict(base_kwargs) if base_kwargs and uses_backbone(base_kwargs) else None
        self.base = make_base_network(self.base_kwargs, name="base") if self.base_kwargs else None

    @property
    def feature_dim(self) -> int:
        if self.base is not None:
            return int(self.base.map_dim)
        return int(np.prod(self.image_shape))

    def build(self, input_shape=None):
        if self.base is not None:
            self.base.build((None,) + self.image_shape)
        d = self.feature_dim
        self.mean = self.add_weight(shape=(d,), initializer="zeros", trainable=False, name="mean", dtype="float32")
        self.projection = self.add_weight(
            shape=(d, self.num_bits), initializer="zeros", trainable=False, name="projection", dtype="float32"
        )
        self.built = True

    def features(self, x, training=False):
        if self.base is not None:
            return ops.cast(self.base.feature_map(x), "float32")
        return ops.reshape(ops.cast(x, "float32"), (-1, self.feature_dim))

    def codes_from_features(self, features):
        return ops.matmul(features - self.mean, self.projection)

    def relaxed_codes(self, x, training=False):
        return self.codes_from_features(self.features(x))

    def serving_outputs(self, x):
        f = self.features(x)
        codes = self.codes_from_features(f)
        logits = ops.zeros((ops.shape(f)[0], self.num_classes), dtype="float32")
        energy = -ops.mean(ops.square(f - self.mean), axis=-1)
        return {"relaxed_codes": codes, "class_logits": logits, "energy": energy}

    def call(self, x, training=False):
        return self.relaxed_codes(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            num_bits=self.num_bits,
            num_classes=self.num_classes,
            base_kwargs=base_kwargs_of(self.base) if self.base is not None else None,
        )
        return config
