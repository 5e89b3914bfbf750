import numpy as np
import tensorflow as tf

from coophash_keras.models.langevin import revise_with_langevin


def gaussian_energy(mean, std):
    """f_E(x) = -||x - mean||^2 / (2 std^2): Langevin's stationary law is N(mean, std^2)."""

    def f(x, labels):
        return -tf.reduce_sum(tf.square(x - mean), axis=[1, 2, 3]) / (2.0 * std**2)

    return f


def ula_variance(std, step_size):
    # Unadjusted Langevin on a Gaussian with h = delta^2/2 has stationary variance
    # std^2 / (1 - h / (2 std^2)) (the O(h) discretisation bias), not exactly std^2.
    h = step_size**2 / 2
    return std**2 / (1 - h / (2 * std**2))


def test_langevin_reaches_gaussian_mean_and_variance():
    mean, std, delta = 1.5, 0.7, 0.2
    x0 = tf.zeros([4000, 2, 2, 1])
    x, grad_norm = revise_with_langevin(
        gaussian_energy(mean, std), x0, None, steps=600, step_size=delta, noise_scale=1.0, seed=tf.constant([3, 4])
    )
    x = x.numpy().ravel()
    assert abs(x.mean() - mean) < 0.02
    assert abs(x.var() / ula_variance(std, delta) - 1) < 0.05
    assert np.isfinite(float(grad_norm)) and float(grad_norm) > 0


def test_reference_gaussian_term_alone_gives_its_variance():
    sigma, delta = 0.5, 0.1
    zero_energy = lambda x, c: tf.zeros([tf.shape(x)[0]])  # noqa: E731
    x, _ = revise_with_langevin(
        zero_energy,
        tf.fill([4000, 2, 2, 1], 2.0),
        None,
        steps=800,
        step_size=delta,
        noise_scale=1.0,
        seed=tf.constant([1, 1]),
        ref_sigma=sigma,
    )
    x = x.numpy().ravel()
    assert abs(x.mean()) < 0.02
    assert abs(x.var() / ula_variance(sigma, delta) - 1) < 0.05


def test_without_noise_it_is_gradient_ascent_on_the_energy():
    f = gaussian_energy(1.0, 1.0)
    x0 = tf.zeros([8, 2, 2, 1])
    x, _ = revise_with_langevin(f, x0, None, steps=1, step_size=0.5, noise_scale=0.0, seed=tf.constant([0, 0]))
    # one step: x + delta^2/2 * (mean - x) = 0.125
    np.testing.assert_allclose(x.numpy(), 0.125, rtol=1e-6)
    assert float(tf.reduce_mean(f(x, None))) > float(tf.reduce_mean(f(x0, None)))


def test_clips_and_zero_steps():
    f = gaussian_energy(10.0, 1.0)
    x0 = tf.zeros([4, 2, 2, 1])
    x, _ = revise_with_langevin(
        f, x0, None, steps=5, step_size=1.0, noise_scale=0.0, clip_update=0.1, value_range=(-1.0, 1.0)
    )
    np.testing.assert_allclose(x.numpy(), 0.5, rtol=1e-6)  # five updates clipped at 0.1
    x, _ = revise_with_langevin(f, x0, None, steps=50, step_size=1.0, noise_scale=0.0, value_range=(-1.0, 1.0))
    assert x.numpy().max() <= 1.0
    same, norm = revise_with_langevin(f, x0, None, steps=0, step_size=1.0)
    np.testing.assert_array_equal(same.numpy(), x0.numpy())


def test_only_images_are_differentiated_and_result_is_constant():
    w = tf.Variable(2.0)
    f = lambda x, c: -w * tf.reduce_sum(tf.square(x), axis=[1, 2, 3])  # noqa: E731
    x0 = tf.ones([3, 2, 2, 1])
    with tf.GradientTape() as tape:
        x, _ = revise_with_langevin(f, x0, None, steps=2, step_size=0.1, noise_scale=0.0)
        out = tf.reduce_sum(x) * w
    grad = tape.gradient(out, w)
    # d/dw of sum(x) * w with x constant is sum(x): no path through the Langevin loop.
    np.testing.assert_allclose(grad.numpy(), tf.reduce_sum(x).numpy(), rtol=1e-6)
    assert float(w.numpy()) == 2.0


def test_different_seeds_give_different_noise():
    f = lambda x, c: tf.zeros([tf.shape(x)[0]])  # noqa: E731
    a, _ = revise_with_langevin(f, tf.zeros([2, 2, 2, 1]), None, steps=1, step_size=0.1, seed=tf.constant([0, 1]))
    b, _ = revise_with_langevin(f, tf.zeros([2, 2, 2, 1]), None, steps=1, step_size=0.1, seed=tf.constant([0, 2]))
    c, _ = revise_with_langevin(f, tf.zeros([2, 2, 2, 1]), None, steps=1, step_size=0.1, seed=tf.constant([0, 1]))
    assert not np.allclose(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy(), c.numpy())
