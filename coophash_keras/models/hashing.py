"""What every hashing model of the package shares (CoopHash and the baselines): the config
object and its serialisation, label handling, and encoding images to codes."""

import tensorflow as tf

from coophash_keras.codes import pack_codes, sign_codes
from coophash_keras.config import CoopHashConfig
from coophash_keras.data.validation import validate_images


def as_config(config):
    """CoopHashConfig from None (defaults), a dict, or a CoopHashConfig; validated."""
    if config is None:
        config = CoopHashConfig()
    elif isinstance(config, dict):
        config = CoopHashConfig.from_dict(config)
    return config.validate()


def sample_negative_labels(labels_multi_hot, seed, num_classes):
    """c- sharing no class with c+: a uniformly drawn class absent from the anchor's label set
    (any class if the anchor has them all). `seed` is a stateless seed."""
    u = tf.random.stateless_uniform(tf.shape(labels_multi_hot), seed)
    return tf.one_hot(tf.argmax(u - 2.0 * labels_multi_hot, axis=-1), num_classes)


def bit_balance(relaxed_codes):
    """1 - mean |mean bit| over the batch: 1 = every bit split evenly, 0 = constant bits."""
    bits = tf.cast(sign_codes(relaxed_codes), tf.float32)
    return 1.0 - tf.reduce_mean(tf.abs(tf.reduce_mean(bits, axis=0)))


def correct_predictions(logits, labels_multi_hot, multi_label):
    """Per-example 0/1: argmax hit (single-label) or every class right (multi-label)."""
    if multi_label:
        correct = tf.reduce_all(tf.equal(logits > 0, labels_multi_hot > 0.5), axis=-1)
    else:
        correct = tf.equal(tf.argmax(logits, -1), tf.argmax(labels_multi_hot, -1))
    return tf.cast(correct, tf.float32)


class HashingModelMixin:
    """Mixed into keras.Model subclasses that hold `self.config` and whose `call(images)` returns
    the relaxed (tanh) codes of raw-pixel images."""

    def get_config(self):
        base = super().get_config()
        base["config"] = self.config.to_dict()
        return base

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config=CoopHashConfig.from_dict(config.pop("config")), **config)

    def labels_to_multi_hot(self, labels):
        if self.config.multi_label:
            return tf.cast(labels, tf.float32)
        return tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), self.config.num_classes)

    def relaxed_codes(self, images, batch_size=256, verbose=0):
        images = validate_images(images, self.config.image_shape)
        return self.predict(images, batch_size=batch_size, verbose=verbose)

    def encode(self, images, packed=False, batch_size=256, verbose=0):
        """Binary codes of raw-pixel images [N, H, W, C]: int8 {-1,+1} [N, K], or with
        packed=True uint8 [N, K/8] (MSB first, bit 1 = +1)."""
        codes = sign_codes(self.relaxed_codes(images, batch_size, verbose))
        return pack_codes(codes) if packed else codes
