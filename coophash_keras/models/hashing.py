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
