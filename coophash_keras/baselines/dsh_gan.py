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
"""

import keras
import tensorflow as tf

from coophash_keras import losses
from coophash_keras.data.validation import validate_fit_data
from coophash_keras.layers import PairGenerator
from coophash_keras.models.descriptor import MultipurposeDescriptor
from coophash_keras.models.hashing import (
    HashingModelMixin,
    as_config,
    bit_balance,
    correct_predictions,
    sample_negative_labels,
)
from coophash_keras.preprocessing import denormalize_images, normalize_images

_POSITIVE, _NEGATIVE, _NEGATIVE_LABELS = 0, 1, 2


def _bce(logits, target):
    """Per-example sigmoid cross-entropy against a constant target (1 = real, 0 = synthetic)."""
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits)


@keras.saving.register_keras_serializable(package="coophash")
class DSHGAN(HashingModelMixin, keras.Model):
    """`compile()` then `fit(ds)`; ds yields (images, labels) or (images, labels, unlabeled_images),
    raw pixels [0, 255]. `encode`, `.keras` round trip and `coophash export` as for CoopHash."""

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

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        c = self.config
        self.descriptor = MultipurposeDescriptor(
            c.image_shape, c.num_classes, c.num_bits, c.latent_dim, c.base_filters, c.feature_dim, name="descriptor"
        )
        self.generator = PairGenerator(
            c.image_shape, c.latent_dim, c.num_classes, c.generator_filters, name="generator"
        )
        self.seed_generator = keras.random.SeedGenerator(c.seed, name="seed_generator")
        names = [
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
        ]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.discriminator_optimizer = None
        self.generator_optimizer = None

    def build(self, input_shape=None):
        self.descriptor.build()
        self.generator.build()
        self.built = True

    def call(self, images, training=False):
        return self.descriptor.hash_head(self.descriptor.features(normalize_images(images)))

    def compile(self, discriminator_optimizer=None, generator_optimizer=None, **kwargs):
        """Adam for the shared CNN and its streams, Adam for the generator (config LRs, beta_1)."""
        super().compile(optimizer=None, **kwargs)
        c = self.config
        self.discriminator_optimizer = discriminator_optimizer or keras.optimizers.Adam(
            c.descriptor_learning_rate, beta_1=c.adam_beta_1, name="discriminator_optimizer"
        )
        self.generator_optimizer = generator_optimizer or keras.optimizers.Adam(
            c.generator_learning_rate, beta_1=c.adam_beta_1, name="generator_optimizer"
        )
        if not self.built:
            self.build()
        self.discriminator_optimizer.build(self.descriptor.descriptor_variables)
        self.generator_optimizer.build(self.generator.trainable_variables)

    def get_compile_config(self):
        if self.discriminator_optimizer is None:
            return None
        return {
            "discriminator_optimizer": keras.optimizers.serialize(self.discriminator_optimizer),
            "generator_optimizer": keras.optimizers.serialize(self.generator_optimizer),
        }

    def compile_from_config(self, config):
        self.compile(
            keras.optimizers.deserialize(config["discriminator_optimizer"]),
            keras.optimizers.deserialize(config["generator_optimizer"]),
        )

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ----------------------------------------------------------------------------- pieces
    def streams(self, x):
        """Adversary logit (real > 0), class logits and relaxed codes of normalised images."""
        features = self.descriptor.features(x)
        adversary = tf.reduce_logsumexp(self.descriptor.energy_head(features), axis=-1)
        return adversary, self.descriptor.classifier_head(features), self.descriptor.hash_head(features)

    def synthesize_triplet_pairs(self, labels_multi_hot, seed):
        """x+ = G(c+, z1), x- = G(c-, z2) with c- sharing no class with c+ (independent noise)."""
        n = tf.shape(labels_multi_hot)[0]
        fold = tf.random.experimental.stateless_fold_in
        z_pos = tf.random.stateless_normal([n, self.config.latent_dim], fold(seed, _POSITIVE))
        z_neg = tf.random.stateless_normal([n, self.config.latent_dim], fold(seed, _NEGATIVE))
        c_neg = sample_negative_labels(labels_multi_hot, fold(seed, _NEGATIVE_LABELS), self.config.num_classes)
        return self.generator(z_pos, labels_multi_hot), self.generator(z_neg, c_neg), c_neg

    def discriminator_losses(self, x, labels, unlabeled, x_pos, x_neg, c_neg):
        c = self.config
        n = tf.shape(x)[0]
        real = x if unlabeled is None else tf.concat([x, unlabeled], 0)
        adv_real, logits_real, hash_real = self.streams(real)
        adv_syn, logits_syn, hash_syn = self.streams(tf.concat([x_pos, x_neg], 0))
        terms = {
            "adversarial_loss": tf.reduce_mean(_bce(adv_real, 1.0)) + tf.reduce_mean(_bce(adv_syn, 0.0)),
            "classification_loss": tf.reduce_mean(
                losses.classification_loss(
                    tf.concat([logits_real[:n], logits_syn], 0), tf.concat([labels, labels, c_neg], 0), c.multi_label
                )
            ),
            "triplet_loss": tf.reduce_mean(
                losses.triplet_loss(hash_real[:n], hash_syn[:n], hash_syn[n:], c.triplet_margin)
            ),
            "quantization_loss": tf.reduce_mean(losses.quantization_loss(hash_real)),
        }
        total = (
            c.adversarial_weight * terms["adversarial_loss"]
            + c.classification_weight * terms["classification_loss"]
            + c.triplet_weight * terms["triplet_loss"]
            + c.quantization_weight * terms["quantization_loss"]
        )
        terms.update(
            total=total,
            real_score=tf.reduce_mean(tf.sigmoid(adv_real)),
            synthetic_score=tf.reduce_mean(tf.sigmoid(adv_syn)),
            logits=logits_real[:n],
            hash=hash_real[:n],
        )
        return terms

    def generator_losses(self, x, labels, seed):
        """Non-saturating adversarial + classification as its label + the triplet it appears in."""
        c = self.config
        x_pos, x_neg, c_neg = self.synthesize_triplet_pairs(labels, seed)
        adv_syn, logits_syn, hash_syn = self.streams(tf.concat([x_pos, x_neg], 0))
        anchor = tf.stop_gradient(self.streams(x)[2])
        n = tf.shape(x)[0]
        return (
            c.adversarial_weight * tf.reduce_mean(_bce(adv_syn, 1.0))
            + c.classification_weight
            * tf.reduce_mean(losses.classification_loss(logits_syn, tf.concat([labels, c_neg], 0), c.multi_label))
            + c.triplet_weight
            * tf.reduce_mean(losses.triplet_loss(anchor, hash_syn[:n], hash_syn[n:], c.triplet_margin))
        )

    @staticmethod
    def _replica_share(loss):
        # Gradients are summed across replicas: each replica contributes its share of the mean.
        return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)

    # ----------------------------------------------------------------------------- steps
    def _unpack(self, data):
        x = normalize_images(data[0])
        unlabeled = normalize_images(data[2]) if len(data) > 2 and data[2] is not None else None
        return x, self.labels_to_multi_hot(data[1]), unlabeled

    def train_step(self, data):
        x, labels, unlabeled = self._unpack(data)
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        x_pos, x_neg, c_neg = self.synthesize_triplet_pairs(labels, seed)
        d_vars = self.descriptor.descriptor_variables
        with tf.GradientTape() as tape:
            terms = self.discriminator_losses(
                x, labels, unlabeled, tf.stop_gradient(x_pos), tf.stop_gradient(x_neg), c_neg
            )
            d_loss = self._replica_share(terms["total"])
        self.discriminator_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        g_vars = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            g_loss = self.generator_losses(x, labels, tf.random.experimental.stateless_fold_in(seed, 7))
            scaled = self._replica_share(g_loss)
        self.generator_optimizer.apply(tape.gradient(scaled, g_vars), g_vars)
        return self._track(terms, g_loss, labels)

    def test_step(self, data):
        x, labels, unlabeled = self._unpack(data)
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        terms = self.discriminator_losses(x, labels, unlabeled, *self.synthesize_triplet_pairs(labels, seed))
        return self._track(terms, self.generator_losses(x, labels, seed), labels)

    def _track(self, terms, g_loss, labels):
        t = self.trackers
        t["loss"].update_state(terms["total"])
        for name in (
            "adversarial_loss",
            "classification_loss",
            "triplet_loss",
            "quantization_loss",
            "real_score",
            "synthetic_score",
        ):
            t[name].update_state(terms[name])
        t["generator_loss"].update_state(g_loss)
        t["bit_balance"].update_state(bit_balance(terms["hash"]))
        t["class_accuracy"].update_state(correct_predictions(terms["logits"], labels, self.config.multi_label))
        return {m.name: m.result() for m in self.metrics}

    def fit(self, x=None, y=None, *args, **kwargs):
        if self.discriminator_optimizer is None:
            raise ValueError("DSHGAN.fit called before compile(); call model.compile() first.")
        validate_fit_data(x, y, self.config)
        return super().fit(x, y, *args, **kwargs)

    def generate(self, labels, seed=0):
        """Generator samples G(c, z) as uint8 images for a list of class ids (or multi-hot rows)."""
        c = self.labels_to_multi_hot(tf.convert_to_tensor(labels))
        z = tf.random.stateless_normal([tf.shape(c)[0], self.config.latent_dim], [seed, 0])
        return denormalize_images(self.generator(z, c)).numpy()
