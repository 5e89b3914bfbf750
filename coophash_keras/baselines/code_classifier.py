"""Classification through the codes: class logits are a linear read-out of the relaxed (tanh)
codes, trained by cross-entropy, with an optional quantization term. The baseline a user would
write first ("classification is a strong baseline", Zhai & Wu 2018), and the one every other
method has to beat."""

import keras

from coophash_keras import losses
from coophash_keras.baselines.pointwise import PointwiseHashingModel


def code_classification_loss(class_logits, relaxed_codes, labels_multi_hot, multi_label, quantization_weight):
    """Per example: softmax (or sigmoid, multi-label) cross-entropy of logits read from the codes,
    plus quantization_weight * mean (|u| - 1)^2."""
    ce = losses.classification_loss(class_logits, labels_multi_hot, multi_label)
    quantization = losses.quantization_loss(relaxed_codes)
    return {
        "classification_loss": ce,
        "quantization_loss": quantization,
        "total": ce + quantization_weight * quantization,
    }


@keras.saving.register_keras_serializable(package="coophash")
class CodeClassifier(PointwiseHashingModel):
    """Config fields used: the shared base (base_*, feature_dim), num_bits, quantization_weight,
    descriptor_learning_rate (the network's Adam LR), adam_beta_1 (default 0.9)."""

    loss_names = ("classification_loss", "quantization_loss")
    tunable_fields = ("descriptor_learning_rate", "quantization_weight", "base_dropout")

    def code_losses(self, codes, labels):
        logits = self.hash_network.class_logits_from_codes(codes)
        return code_classification_loss(logits, codes, labels, self.config.multi_label, self.config.quantization_weight)
