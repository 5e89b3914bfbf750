"""Triplet hashing baseline (formerly "plain"): CoopHash's base network with only the hash and class heads,
trained by classification + triplet on real in-batch triplets + quantization (no generator, no
energy, no Langevin). Same data contract, `encode`, and `.keras` round trip as CoopHash."""

import keras
import tensorflow as tf

from coophash_keras import losses
from coophash_keras.data.validation import validate_fit_data
from coophash_keras.layers import ClassifierHead, ConvBaseNetwork, HashHead
from coophash_keras.models.hashing import HashingModelMixin, as_config, bit_balance
from coophash_keras.preprocessing import normalize_images


@keras.saving.register_keras_serializable(package="coophash")
class TripletHashNet(HashingModelMixin, keras.Model):
    """Uses the CoopHashConfig fields that apply: shapes, widths, num_bits, classification_weight,
    real_triplet_weight (default 1 here), triplet_margin, quantization_weight,
    descriptor_learning_rate, adam_beta_1."""

    tunable_fields = ("triplet_margin", "classification_weight", "quantization_weight", "descriptor_learning_rate")

    @staticmethod
    def uses_unlabeled(config):
        return False

    def __init__(self, config=None, **kwargs):
        super().__init__(**kwargs)
        self.config = as_config(config)
        c = self.config
        self.base = ConvBaseNetwork(c.image_shape, c.base_filters, c.feature_dim, name="base")
        self.classifier_head = ClassifierHead(c.num_classes, name="classifier_head", dtype="float32")
        self.hash_head = HashHead(c.num_bits, name="hash_head", dtype="float32")
        self.trackers = {
            n: keras.metrics.Mean(name=n)
            for n in ("loss", "classification_loss", "triplet_loss", "quantization_loss", "bit_balance")
        }

    def build(self, input_shape=None):
        self.base.build((None,) + tuple(self.config.image_shape))
        self.classifier_head.build((None, self.config.feature_dim))
        self.hash_head.build((None, self.config.feature_dim))
        self.built = True

    def call(self, images, training=False):
        return self.hash_head(self.base(normalize_images(images)))

    def compile(self, optimizer=None, **kwargs):
        c = self.config
        optimizer = optimizer or keras.optimizers.Adam(c.descriptor_learning_rate, beta_1=c.adam_beta_1)
        super().compile(optimizer=optimizer, **kwargs)
        if not self.built:
            self.build()
        self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def losses_for(self, images, labels):
        c = self.config
        features = self.base(normalize_images(images))
        codes = self.hash_head(features)
        labels = self.labels_to_multi_hot(labels)
        terms = {
            "classification_loss": losses.classification_loss(self.classifier_head(features), labels, c.multi_label),
            "triplet_loss": losses.in_batch_triplet_loss(codes, labels, c.triplet_margin),
            "quantization_loss": losses.quantization_loss(codes),
        }
        total = (
            c.classification_weight * terms["classification_loss"]
            + (c.real_triplet_weight or 1.0) * terms["triplet_loss"]
            + c.quantization_weight * terms["quantization_loss"]
        )
        return total, terms, codes

    def _track(self, total, terms, codes):
        self.trackers["loss"].update_state(total)
        for k, v in terms.items():
            self.trackers[k].update_state(v)
        self.trackers["bit_balance"].update_state(bit_balance(codes))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            total, terms, codes = self.losses_for(data[0], data[1])
            loss = tf.nn.compute_average_loss(total)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return self._track(total, terms, codes)

    def test_step(self, data):
        return self._track(*self.losses_for(data[0], data[1]))

    def fit(self, x=None, y=None, *args, **kwargs):
        validate_fit_data(x, y, self.config)
        return super().fit(x, y, *args, **kwargs)
