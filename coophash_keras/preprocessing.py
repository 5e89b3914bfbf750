"""The one image normalisation used at train, evaluation and export time.

Models take raw pixel values in [0, 255] (uint8 or float) and map them to [-1, 1], the range
of the generator's tanh output and of Langevin revision."""

import numpy as np
import tensorflow as tf

PIXEL_SCALE = 127.5


def normalize_images(images):
    """[0, 255] -> [-1, 1], float32. Works on tensors (in graphs, incl. SavedModel signatures)."""
    return tf.cast(images, tf.float32) / PIXEL_SCALE - 1.0


def to_pixels(images):
    """[-1, 1] -> float32 pixels in [0, 255], the inverse of normalize_images (no rounding)."""
    return (tf.cast(images, tf.float32) + 1.0) * PIXEL_SCALE


def denormalize_images(images):
    """[-1, 1] -> uint8 [0, 255] (for TensorBoard images and saving samples)."""
    x = (tf.clip_by_value(tf.cast(images, tf.float32), -1.0, 1.0) + 1.0) * PIXEL_SCALE
    return tf.cast(tf.round(x), tf.uint8)


def to_uint8_images(array, max_value):
    """Rescale an array whose values lie in [0, max_value] to uint8 [0, 255] (e.g. digits: 16)."""
    array = np.asarray(array, dtype=np.float64)
    return np.clip(np.round(array * (255.0 / max_value)), 0, 255).astype(np.uint8)
