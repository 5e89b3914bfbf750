"""DSH-GAN (Qiu et al., SIGIR 2017) as a Keras model: the GAN predecessor CoopHash compares with.

A label-conditioned generator G(concat(c, noise)) makes a positive x+ = G(c+, z1) and a negative
x- = G(c-, z2) for every real anchor; one shared CNN feeds an adversary stream (real vs
synthetic), a hash stream and a classification stream. The shared CNN learns adversarial +
classification (real and synthetic) + real-synthetic triplet + quantization losses; the generator
learns to fool the adversary, to be classified as its label and to fit the triplet (DSH-GAN sums
the per-image losses of the triplet for G). Semi-supervised: batches may carry unlabeled images,
used by the adversary only (see `coophash_keras.data.with_unlabeled`).

Ours where DSH-GAN's equations could not be read (docs/RESULTS.md): the loss weights (config
adversarial_weight, classification_weight, triplet_weight, quantization_weight), the margin, the
non-saturating generator loss, the networks (CoopHash's base and generator, so that the two
methods differ only in how they learn). The streams live in a MultipurposeDescriptor so DSH-GAN
exports and serves exactly like CoopHash: the adversary stream is its energy head read as one
logit, logsumexp_c e_c(x) (so the served `energy` is the adversary's realness score); its inference
head is unused.

On a pretrained backbone the generator works at the synthesis size as CoopHash's does (see
docs/BACKBONES.md for why): the streams read synthetic images through an upsampling, and the
adversary reads real images resized down to that size and back, so it must tell real from
synthetic by content rather than by sharpness.
"""

import keras
import tensorflow as tf

from coophash_keras import losses
from coophash_keras.models.generative import GenerativeHashingModel
from coophash_keras.models.step_metrics import bit_balance, correct_predictions
from coophash_keras.preprocessing import denormalize_images

_POSITIVE, _NEGATIVE, _NEGATIVE_LABELS, _GENERATOR = 0, 1, 2, 3


def _bce(logits, target):
    """Per-example sigmoid cross-entropy against a constant target (1 = real, 0 = synthetic)."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits)


def _pair_mean(per_example, n):
    """[2n] per-example values of (x+, x-) -> [n]: each anchor's mean over its two fakes."""
    return 0.5 * (per_example[:n] + per_example[n:])


@keras.saving.register_keras_serializable(package="coophash")
class DSHGAN(GenerativeHashingModel):
    """`compile()` then `fit(ds)`; ds yields (images, labels) or (images, labels, unlabeled_images),
    raw pixels [0, 255]. `encode`, `.keras` round trip and `coophash export` as for CoopHash."""

    optimizer_groups = {"discriminator": "descriptor_learning_rate", "generator": "generator_learning_rate"}
    tracker_names = (
        "loss",
        "adversarial_loss",
        "classification_loss",
        "triplet_loss",
        "quantization_loss",
        "generator_loss",
        "real_score",
        "synthetic_score",
        "bit_balance",
        "class_accuracy",
        "diverged",
    )
    tunable_fields = (
        "triplet_weight",
        "triplet_margin",
        "classification_weight",
        "descriptor_learning_rate",
        "generator_learning_rate",
    )

    @staticmethod
    def uses_unlabeled(config):
        return True

    def optimizer_variables(self, group):
        if group == "discriminator":
            return self.hash_network.descriptor_variables
        return self.generator.trainable_variables

    # ----------------------------------------------------------------------------- pieces
    def streams(self, x, training=True):
        """Adversary logit (real > 0), class logits and relaxed codes of normalised images."""
        features = self.hash_network.features(x, training=training)
        adversary = tf.reduce_logsumexp(self.hash_network.energy_head(features), axis=-1)
        codes = self.hash_network.hash_head(features)
        return adversary, self.hash_network.class_logits(features, codes), codes

    def synthesize_triplet_pairs(self, labels_multi_hot, seed):
        """x+ = G(c+, z1), x- = G(c-, z2) with c- sharing no class with c+ (independent noise)."""
        n = tf.shape(labels_multi_hot)[0]
        fold = tf.random.experimental.stateless_fold_in
        z_pos = tf.random.stateless_normal([n, self.config.latent_dim], fold(seed, _POSITIVE))
        z_neg = tf.random.stateless_normal([n, self.config.latent_dim], fold(seed, _NEGATIVE))
        c_neg = self.negative_labels_for(labels_multi_hot, fold(seed, _NEGATIVE_LABELS))
        return self.generator(z_pos, labels_multi_hot), self.generator(z_neg, c_neg), c_neg

    def discriminator_losses(self, batch, x_pos, x_neg, c_neg):
        """Per-anchor terms: adversarial (real and unlabelled real vs the anchor's two fakes),
        classification (real and fakes), real-synthetic triplet, quantization."""
        c = self.config
        x, labels = batch.images, batch.labels
        n = tf.shape(x)[0]
        d = self.hash_network
        adv_real, logits_real, hash_real = self.streams(x)
        if d.synthesizes_smaller:  # real and synthetic images compared at one resolution
            adv_real = self.streams(d.synthetic_view(x))[0]
        adv_syn, logits_syn, hash_syn = self.streams(tf.concat([x_pos, x_neg], 0))
        real_term = _bce(adv_real, 1.0)
        if batch.unlabeled is not None:  # the unlabelled pool counts as real, as much as the labelled
            adv_unlabeled = self.streams(d.synthetic_view(batch.unlabeled))[0]
            real_term = 0.5 * (real_term + tf.reduce_mean(_bce(adv_unlabeled, 1.0)))
        adversarial = real_term + _pair_mean(_bce(adv_syn, 0.0), n)
        classification = self.labelled_classification_loss(logits_real, labels) + _pair_mean(
            self.labelled_classification_loss(logits_syn, tf.concat([labels, c_neg], 0)), n
        )
        terms = {
            "adversarial_loss": adversarial,
            "classification_loss": classification,
            "triplet_loss": losses.triplet_loss(hash_real, hash_syn[:n], hash_syn[n:], c.triplet_margin),
            "quantization_loss": losses.quantization_loss(hash_real),
        }
        terms["total"] = (
            c.adversarial_weight * terms["adversarial_loss"]
            + c.classification_weight * terms["classification_loss"]
            + c.triplet_weight * terms["triplet_loss"]
            + c.quantization_weight * terms["quantization_loss"]
        )
        terms.update(
            real_score=tf.sigmoid(adv_real), synthetic_score=tf.sigmoid(adv_syn), logits=logits_real, hash=hash_real
        )
        return terms

    def generator_losses(self, batch, seed):
        """Non-saturating adversarial + classification as its label + the triplet it appears in."""
        c = self.config
        x_pos, x_neg, c_neg = self.synthesize_triplet_pairs(batch.labels, seed)
        adv_syn, logits_syn, hash_syn = self.streams(tf.concat([x_pos, x_neg], 0))
        anchor = tf.stop_gradient(self.streams(batch.images)[2])
        n = tf.shape(batch.images)[0]
        total = (
            c.adversarial_weight * _pair_mean(_bce(adv_syn, 1.0), n)
            + c.classification_weight
            * _pair_mean(self.labelled_classification_loss(logits_syn, tf.concat([batch.labels, c_neg], 0)), n)
            + c.triplet_weight * losses.triplet_loss(anchor, hash_syn[:n], hash_syn[n:], c.triplet_margin)
        )
        return {"total": total}

    def _logs(self, terms, g_terms, labels, finite):
        return self.record(
            {
                "loss": terms["total"],
                **{
                    k: terms[k]
                    for k in ("adversarial_loss", "classification_loss", "triplet_loss", "quantization_loss")
                },
                "real_score": terms["real_score"],
                "synthetic_score": terms["synthetic_score"],
                "generator_loss": g_terms["total"],
                "bit_balance": bit_balance(terms["hash"]),
                "class_accuracy": correct_predictions(terms["logits"], labels, self.config.multi_label),
                "diverged": 1.0 - tf.cast(finite, tf.float32),
            }
        )

    # ----------------------------------------------------------------------------- steps
    def train_step(self, data):
        batch = self.unpack(data)
        seed = self.step_seed()
        x_pos, x_neg, c_neg = self.synthesize_triplet_pairs(batch.labels, seed)
        x_pos, x_neg = tf.stop_gradient(x_pos), tf.stop_gradient(x_neg)
        terms, finite = self.guarded_update(
            "discriminator", lambda: self.discriminator_losses(batch, x_pos, x_neg, c_neg)
        )
        g_seed = tf.random.experimental.stateless_fold_in(seed, _GENERATOR)
        g_terms, finite = self.guarded_update("generator", lambda: self.generator_losses(batch, g_seed), finite)
        return self._logs(terms, g_terms, batch.labels, finite)

    def test_step(self, data):
        batch = self.unpack(data)
        seed = self.step_seed()
        terms = self.discriminator_losses(batch, *self.synthesize_triplet_pairs(batch.labels, seed))
        return self._logs(terms, self.generator_losses(batch, seed), batch.labels, True)

    def generate(self, labels, seed=0):
        """Generator samples G(c, z) as uint8 images (at the synthesis size) for a list of class ids
        (or multi-hot rows)."""
        c = self.labels_to_multi_hot(tf.convert_to_tensor(labels))
        z = tf.random.stateless_normal([tf.shape(c)[0], self.config.latent_dim], [seed, 0])
        return denormalize_images(self.generator(z, c)).numpy()
