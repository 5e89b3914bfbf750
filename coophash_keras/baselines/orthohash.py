"""OrthoHash (Hoe et al., NeurIPS 2021): one loss for hashing. Codes v = BatchNorm(W f) (no
bias); logits are s * (cos(v, o_c) - m * [c = y]) against a fixed Bernoulli +-1 codebook O (near
orthogonal codewords), trained by cross-entropy; no quantization term by default. Ported from
kamwoh/orthohash (functions/loss/orthohash.py OrthoHashLoss, models/alexnet.py CosSim); for
multi-label data the official default 'label_smoothing' form: cross-entropy against the label set
normalised to sum to 1."""

import keras

from coophash_keras.baselines.pointwise import PointwiseHashingModel
from coophash_keras.layers.codebooks import orthohash_codebook
from coophash_keras.losses import orthohash_loss


@keras.saving.register_keras_serializable(package="coophash")
class OrthoHash(PointwiseHashingModel):
    """Config fields used: the shared base, num_bits, orthohash_scale, orthohash_margin, seed (the
    codebook), descriptor_learning_rate, adam_beta_1 (default 0.9)."""

    hash_layer = "batchnorm"
    class_readout = "codebook"
    loss_names = ("classification_loss",)
    tunable_fields = ("descriptor_learning_rate", "orthohash_scale", "orthohash_margin", "base_dropout")

    def make_codebook(self):
        c = self.config
        return orthohash_codebook(c.num_classes, c.num_bits, c.seed)

    def readout_scale(self):
        return self.config.orthohash_scale

    def code_losses(self, codes, labels):
        c = self.config
        return orthohash_loss(
            self.hash_network.cosine_to_codebook(codes), labels, c.orthohash_scale, c.orthohash_margin, c.multi_label
        )
