"""What the pointwise baselines share: one network (f0 -> hash layer -> class read-out), one
optimizer, and a train step that is one guarded update of a per-example loss of the relaxed codes
and the labels. Each baseline (code classifier, CSQ, OrthoHash, DPN, triplet) only says which
hash layer and read-out it uses and what its loss is."""

import tensorflow as tf

from coophash_keras.models.base import HashingModel
from coophash_keras.models.networks import HashNetwork, base_network_kwargs
from coophash_keras.models.step_metrics import bit_balance, correct_predictions


class PointwiseHashingModel(HashingModel):
    hash_layer = "tanh"
    class_readout = "codes"
    loss_names: tuple = ()  # the per-example terms `code_losses` returns beside "total"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        self.hash_network = HashNetwork(
            base_network_kwargs(c),
            c.num_classes,
            c.num_bits,
            hash_layer=self.hash_layer,
            class_readout=self.class_readout,
            codebook=self.make_codebook(),
            readout_scale=self.readout_scale(),
            multi_label=c.multi_label,
            name="network",
        )

    @staticmethod
    def uses_unlabeled(config):
        return bool(config.pseudo_label_weight)

    @property
    def tracker_names(self):
        pseudo = ("pseudo_label_loss", "pseudo_label_rate") if self.config.pseudo_label_weight else ()
        return ("loss", *self.loss_names, *pseudo, "bit_balance", "class_accuracy", "diverged")

    def make_codebook(self):
        """Fixed class codewords [C, K] for a 'codebook' read-out, else None."""
        return None

    def readout_scale(self):
        return 8.0

    def optimizer_variables(self, group):
        return self.hash_network.trainable_variables

    def code_losses(self, codes, labels):
        """{"total": per-example loss, **named per-example terms} of relaxed codes and labels."""
        raise NotImplementedError

    def _terms(self, batch, training):
        net = self.hash_network
        codes = net.relaxed_codes(batch.images, training=training)
        terms = self.code_losses(codes, batch.labels)
        terms["codes"] = codes
        if batch.unlabeled is not None and self.config.pseudo_label_weight:
            # The same FixMatch term CoopHash can use, through this model's class read-out: the
            # reference for what pseudo-labels alone buy (benchmarks: code_classifier:fixmatch).
            loss, kept = self.pseudo_label_terms(
                batch.unlabeled, lambda x, t: net.class_logits_from_codes(net.relaxed_codes(x, training=t))
            )
            n = tf.shape(codes)[0]
            terms["pseudo_label_loss"] = tf.fill([n], tf.reduce_mean(loss))
            terms["pseudo_label_rate"] = tf.fill([n], tf.reduce_mean(kept))
            terms["total"] = terms["total"] + self.config.pseudo_label_weight * terms["pseudo_label_loss"]
        return terms

    def _logs(self, terms, labels, finite):
        logits = self.hash_network.class_logits_from_codes(terms["codes"])
        return self.record(
            {
                "loss": terms["total"],
                **{k: terms[k] for k in self.loss_names},
                "pseudo_label_loss": terms.get("pseudo_label_loss"),
                "pseudo_label_rate": terms.get("pseudo_label_rate"),
                "bit_balance": bit_balance(terms["codes"]),
                "class_accuracy": correct_predictions(logits, labels, self.config.multi_label),
                "diverged": 1.0 - tf.cast(finite, tf.float32),
            }
        )

    def train_step(self, data):
        batch = self.unpack(data)
        if not self.uses_unlabeled(self.config):
            batch = batch._replace(unlabeled=None)
        terms, finite = self.guarded_update("network", lambda: self._terms(batch, training=True))
        return self._logs(terms, batch.labels, finite)

    def test_step(self, data):
        batch = self.unpack(data)._replace(unlabeled=None)
        return self._logs(self._terms(batch, training=False), batch.labels, True)
