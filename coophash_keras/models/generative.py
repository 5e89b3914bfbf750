"""What the generative models (CoopHash, DSH-GAN) share beyond HashingModel: the negative labels
their contrastive pairs are generated for."""

import tensorflow as tf


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
