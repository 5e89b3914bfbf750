"""Binary codes: sign of the relaxed hash outputs, and packing 8 bits per byte.

Convention (pinned): code bit = +1 where the relaxed output >= 0 (so sign(0) = +1, never 0);
packed bit = 1 for +1, most significant bit first (numpy.packbits order)."""

import numpy as np
import tensorflow as tf


def sign_codes(relaxed):
    """Relaxed outputs -> int8 codes in {-1, +1}. numpy in, numpy out; tensors in, tensors out."""
    if isinstance(relaxed, (tf.Tensor, tf.Variable)):
        return tf.where(relaxed >= 0, tf.constant(1, tf.int8), tf.constant(-1, tf.int8))
    return np.where(np.asarray(relaxed) >= 0, 1, -1).astype(np.int8)


def pack_codes(codes):
    """{-1,+1} (or {0,1}) codes [N, K] -> uint8 [N, K/8], MSB first."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] % 8:
        raise ValueError(f"codes must be [N, K] with K a multiple of 8, got shape {codes.shape}")
    return np.packbits(codes > 0, axis=1)


def unpack_codes(packed, num_bits=None):
    """uint8 [N, K/8] -> int8 {-1,+1} [N, K]."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(f"packed codes must be uint8 [N, K/8], got {packed.dtype} {packed.shape}")
    bits = np.unpackbits(packed, axis=1)
    if num_bits is not None:
        bits = bits[:, :num_bits]
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


def pack_codes_tf(codes):
    """Graph version of pack_codes (for SavedModel signatures): [N, K] -> uint8 [N, K/8]."""
    bits = tf.cast(codes > 0, tf.int32)
    k = bits.shape[-1]
    bits = tf.reshape(bits, [-1, k // 8, 8])
    weights = tf.constant([128, 64, 32, 16, 8, 4, 2, 1], tf.int32)
    return tf.cast(tf.reduce_sum(bits * weights, axis=-1), tf.uint8)
