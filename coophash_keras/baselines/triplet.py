"""Triplet hashing baseline (formerly "plain"): hardest in-batch real triplets on the relaxed
codes, plus classification through the codes and a quantization term. Kept to show what a
triplet loss alone gives with few labels (it is unstable there: see docs/RESULTS.md); it is not
the supervised baseline to beat (that is the code classifier, CSQ, OrthoHash or DPN)."""

import keras

from coophash_keras import losses
from coophash_keras.baselines.pointwise import PointwiseHashingModel


@keras.saving.register_keras_serializable(package="coophash")
class TripletHashNet(PointwiseHashingModel):
    """Config fields used: the shared base, num_bits, triplet_margin, real_triplet_weight (1 when
    0), classification_weight, quantization_weight, descriptor_learning_rate, adam_beta_1."""

    loss_names = ("triplet_loss", "classification_loss", "quantization_loss")
    tunable_fields = ("triplet_margin", "classification_weight", "quantization_weight", "descriptor_learning_rate")

    def code_losses(self, codes, labels):
        c = self.config
        terms = {
            "triplet_loss": losses.in_batch_triplet_loss(codes, labels, c.triplet_margin),
            "classification_loss": losses.classification_loss(
                self.hash_network.class_logits_from_codes(codes), labels, c.multi_label
            ),
            "quantization_loss": losses.quantization_loss(codes),
        }
        terms["total"] = (
            (c.real_triplet_weight or 1.0) * terms["triplet_loss"]
            + c.classification_weight * terms["classification_loss"]
            + c.quantization_weight * terms["quantization_loss"]
        )
        return terms
