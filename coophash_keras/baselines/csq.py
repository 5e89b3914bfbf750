"""CSQ, central similarity quantization (Yuan et al., CVPR 2020): every class gets a fixed hash
centre (rows of a Hadamard matrix, so any two centres are K/2 bits apart); the relaxed code
u = tanh(h) is pulled to its centre by a bit-wise binary cross-entropy, plus a quantization term.
Ported from swuxyj/DeepHash-pytorch CSQ.py (CSQLoss) and the official yuanli2333/
Hadamard-Matrix-for-hashing; multi-label data use the majority centre of the label set."""

import keras
import numpy as np
from keras import ops

from coophash_keras import losses
from coophash_keras.baselines.pointwise import PointwiseHashingModel
from coophash_keras.layers.codebooks import hadamard_centres, label_set_centre


def csq_loss(relaxed_codes, centres, quantization_weight):
    """Per example: mean over bits of BCE((u + 1) / 2, (c + 1) / 2), plus
    quantization_weight * mean (|u| - 1)^2 (CSQLoss with lambda = quantization_weight)."""
    p = 0.5 * (relaxed_codes + 1.0)
    t = 0.5 * (centres + 1.0)
    centre = ops.mean(ops.binary_crossentropy(t[..., None], p[..., None]), axis=(-2, -1))
    quantization = losses.quantization_loss(relaxed_codes)
    return {
        "centre_loss": centre,
        "quantization_loss": quantization,
        "total": centre + quantization_weight * quantization,
    }


@keras.saving.register_keras_serializable(package="coophash")
class CSQ(PointwiseHashingModel):
    """Config fields used: the shared base, num_bits, csq_quantization_weight, seed (random centres
    and the multi-label tie code), descriptor_learning_rate, adam_beta_1 (default 0.9)."""

    class_readout = "codebook"
    loss_names = ("centre_loss", "quantization_loss")
    tunable_fields = ("descriptor_learning_rate", "base_dropout")

    def make_codebook(self):
        c = self.config
        return hadamard_centres(c.num_classes, c.num_bits, c.seed)

    def code_losses(self, codes, labels):
        codebook = self.hash_network.codebook
        if self.config.multi_label:
            tie = np.random.default_rng(self.config.seed + 1).choice([-1.0, 1.0], self.config.num_bits)
            centres = label_set_centre(labels, codebook, tie.astype(np.float32))
        else:
            centres = ops.matmul(labels, codebook)  # one-hot rows pick their class's centre
        return csq_loss(codes, centres, self.config.csq_quantization_weight)
