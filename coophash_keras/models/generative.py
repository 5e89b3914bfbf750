"""What the generative models (CoopHash, DSH-GAN) share beyond HashingModel: their two networks
(the multipurpose descriptor and the pair generator, built from one config) and the negative labels
their contrastive pairs are generated for."""

import tensorflow as tf

from coophash_keras.models.base import HashingModel
from coophash_keras.models.descriptor import descriptor_and_generator


class GenerativeHashingModel(HashingModel):
    """A HashingModel with a pair generator: `self.hash_network` is the multipurpose descriptor
    (models/descriptor.py), `self.generator` the label-conditioned generator g(z, c)."""

    default_beta_1 = 0.5  # CoopNets, GAN practice

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.hash_network, self.generator = descriptor_and_generator(self.config)

    def build(self, input_shape=None):
        self.hash_network.build()
        self.generator.build()
        self.built = True

    def negative_labels_for(self, labels_multi_hot, seed):
        """c- for every anchor's c+ (sample_negative_labels with the config's negative_labels)."""
        return sample_negative_labels(
            labels_multi_hot, seed, self.config.num_classes, same_size=self.config.negative_labels == "absent_set"
        )


def sample_negative_labels(labels_multi_hot, seed, num_classes, same_size=False):
    """c- sharing no class with c+: one uniformly drawn class absent from the anchor's label set, or
    with `same_size` a uniformly drawn set of min(|c+|, #absent) absent classes (so a multi-label
    anchor's c- is a label set too). Any one class if the anchor has them all. `seed` is a
    stateless seed; a one-hot c+ gives the same c- either way."""
    labels = tf.cast(labels_multi_hot, tf.float32)
    # absent classes score in (0, 1), present ones in (-2, -1): the top k are k random absent classes
    scores = tf.random.stateless_uniform(tf.shape(labels), seed) - 2.0 * labels
    if not same_size:
        return tf.one_hot(tf.argmax(scores, axis=-1), num_classes)
    present = tf.reduce_sum(labels, axis=-1)
    k = tf.cast(tf.maximum(tf.minimum(present, num_classes - present), 1.0), tf.int32)
    kth_best = tf.gather(tf.sort(scores, axis=-1, direction="DESCENDING"), k - 1, axis=-1, batch_dims=1)
    return tf.cast(scores >= kth_best[:, None], tf.float32)
