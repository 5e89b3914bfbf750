"""DPN, deep polarized network (Fan et al., IJCAI 2020): each class has a random +-1 target t;
the codes v (a linear hash layer, no activation) are polarized with the hinge max(0, m - v * t)
summed over bits. Ported from kamwoh/DPN (scripts/train_hashing.py calculate_loss, main.py:
margin 1, targets = sign of a Gaussian, no cross-entropy or regularisation by default); for
multi-label data the official sum of the per-class hinges over the label set."""

import keras
from keras import ops

from coophash_keras.baselines.pointwise import PointwiseHashingModel
from coophash_keras.layers.codebooks import sign_of_gaussian


def dpn_loss(codes, targets, labels_multi_hot, margin):
    """Per example: sum over the classes c in the label set of sum_bits max(0, m - v * t_c)."""
    hinge = ops.sum(ops.relu(margin - codes[:, None, :] * targets[None, :, :]), axis=-1)  # [B, C]
    polarization = ops.sum(hinge * labels_multi_hot, axis=-1)
    return {"polarization_loss": polarization, "total": polarization}


@keras.saving.register_keras_serializable(package="coophash")
class DPN(PointwiseHashingModel):
    """Config fields used: the shared base, num_bits, dpn_margin, seed (the targets),
    descriptor_learning_rate, adam_beta_1 (default 0.9)."""

    hash_layer = "linear"
    class_readout = "codebook"
    loss_names = ("polarization_loss",)
    tunable_fields = ("descriptor_learning_rate", "dpn_margin", "base_dropout")

    def make_codebook(self):
        c = self.config
        return sign_of_gaussian(c.num_classes, c.num_bits, c.seed)

    def code_losses(self, codes, labels):
        return dpn_loss(codes, self.hash_network.codebook, labels, self.config.dpn_margin)
