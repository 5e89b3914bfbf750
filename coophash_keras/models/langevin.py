"""Langevin revision of images on an energy function (Eq. 6), a GradientTape loop on the images."""

import tensorflow as tf


def revise_with_langevin(energy_fn, images, labels, *, steps, step_size, noise_scale=1.0,
                         seed=None, ref_sigma=None, clip_update=None, value_range=None):
    """Run `steps` Langevin updates ascending f_E = energy_fn(images, labels) (higher = likelier):

        x <- x + delta^2 / 2 * (d f_E / dx - x / ref_sigma^2) + noise_scale * delta * N(0, I)

    The reference-Gaussian term is used only when `ref_sigma` is set. `clip_update` clips each
    step's change per pixel, `value_range` clips the images; both are off when None.
    `seed` is a stateless seed (int32 [2]); step t uses fold_in(seed, t), so replicas given
    different seeds draw different noise. No noise is drawn if noise_scale == 0 or seed is None.

    Only the images are differentiated (the tape watches nothing else) and the result is a
    constant (stop_gradient). Returns (revised images, mean L2 norm of d f_E / dx over steps).
    """
    x = tf.convert_to_tensor(images)
    delta = tf.cast(step_size, x.dtype)
    add_noise = seed is not None and noise_scale > 0
    if steps == 0:
        return tf.stop_gradient(x), tf.zeros((), x.dtype)

    def one_step(t, x, grad_norm_sum):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            total_energy = tf.reduce_sum(energy_fn(x, labels))
        grad = tape.gradient(total_energy, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        drift = grad if ref_sigma is None else grad - x / (ref_sigma ** 2)
        update = 0.5 * delta * delta * drift
        if add_noise:
            step_seed = tf.random.experimental.stateless_fold_in(seed, t)
            update += noise_scale * delta * tf.random.stateless_normal(tf.shape(x), step_seed, dtype=x.dtype)
        if clip_update is not None:
            update = tf.clip_by_value(update, -clip_update, clip_update)
        x = x + update
        if value_range is not None:
            x = tf.clip_by_value(x, value_range[0], value_range[1])
        per_example = tf.sqrt(tf.reduce_sum(tf.reshape(tf.square(grad), [tf.shape(x)[0], -1]), axis=1))
        return t + 1, x, grad_norm_sum + tf.reduce_mean(per_example)

    _, x, grad_norm_sum = tf.while_loop(
        lambda t, *_: t < steps, one_step,
        (tf.constant(0), x, tf.zeros((), x.dtype)),
        shape_invariants=(tf.TensorShape([]), x.shape, tf.TensorShape([])))
    return tf.stop_gradient(x), grad_norm_sum / tf.cast(steps, x.dtype)
