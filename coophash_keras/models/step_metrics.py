"""Per-batch numbers the models' trackers show in `fit`, beside their losses."""

import tensorflow as tf

from coophash_keras.codes import sign_codes


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
