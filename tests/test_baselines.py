"""Each baseline's loss against a hand-computed case, its codebook's structure, and a `fit` on digits
that lowers it (single- and multi-label). The end-to-end path every model shares (save, export,
serve, index, resume, tune) is tests/test_every_model.py."""

import numpy as np
import pytest
import tensorflow as tf

from coophash_keras.baselines.code_classifier import code_classification_loss
from coophash_keras.baselines.csq import csq_loss
from coophash_keras.baselines.dpn import dpn_loss
from coophash_keras.baselines.orthohash import orthohash_loss
from coophash_keras.layers.codebooks import hadamard_centres, label_set_centre, random_codebook, sign_of_gaussian
from coophash_keras.registry import model_class

POINTWISE = ["code_classifier", "csq", "orthohash", "dpn", "triplet"]


def hamming(a, b):
    return int(np.sum(a != b))


def test_csq_hadamard_centres_are_half_the_bits_apart():
    centres = hadamard_centres(10, 32, seed=0)
    assert centres.shape == (10, 32) and set(np.unique(centres)) == {-1.0, 1.0}
    distances = {hamming(centres[i], centres[j]) for i in range(10) for j in range(i + 1, 10)}
    assert distances == {16}  # 10 <= 32 classes: rows of H_32, pairwise K/2 apart
    both_halves = hadamard_centres(16, 8, seed=0)  # rows of [H_8; -H_8]: K/2 apart, or K for a row and its negation
    d = {hamming(both_halves[i], both_halves[j]) for i in range(16) for j in range(i + 1, 16)}
    assert d == {4, 8}
    random = hadamard_centres(10, 24, seed=3)  # 24 is no power of 2: random centres, all distinct
    assert random.shape == (10, 24) and min(hamming(random[i], random[j]) for i in range(10) for j in range(i)) > 0
    np.testing.assert_array_equal(random, hadamard_centres(10, 24, seed=3))  # deterministic


def test_codebooks_are_pm1_and_seeded():
    for book in (random_codebook(10, 16, 1), sign_of_gaussian(10, 16, 1)):
        assert book.shape == (10, 16) and set(np.unique(book)) == {-1.0, 1.0}
    assert not np.array_equal(sign_of_gaussian(10, 16, 1), sign_of_gaussian(10, 16, 2))


def test_label_set_centre_is_the_majority_with_the_tie_code():
    book = np.array([[1, 1, 1, -1], [1, -1, -1, -1], [1, 1, -1, 1]], np.float32)
    tie = np.array([-1, -1, 1, 1], np.float32)
    labels = np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], np.float32)
    centres = label_set_centre(labels, book, tie).numpy()
    # {0, 1}: bits 0 and 3 agree, bits 1 and 2 tie -> the tie code; {0, 1, 2}: majority; {2}: itself
    np.testing.assert_array_equal(centres, [[1, -1, 1, -1], [1, 1, -1, -1], [1, 1, -1, 1]])


def test_csq_loss_hand_computed():
    u = np.array([[0.5, -0.5]], np.float32)
    centre = np.array([[1.0, -1.0]], np.float32)
    terms = csq_loss(u, centre, quantization_weight=0.1)
    bce = -np.log(0.75)  # p = (u + 1) / 2 = 0.75 towards target 1, 0.25 towards target 0
    np.testing.assert_allclose(terms["centre_loss"], [bce], rtol=1e-5)
    np.testing.assert_allclose(terms["quantization_loss"], [0.25], rtol=1e-6)
    np.testing.assert_allclose(terms["total"], [bce + 0.1 * 0.25], rtol=1e-5)


def test_orthohash_loss_hand_computed():
    cosine = np.array([[1.0, 0.0]], np.float32)
    single = orthohash_loss(cosine, np.array([[1.0, 0.0]], np.float32), scale=8.0, margin=0.2, multi_label=False)
    # logits 8 * (1 - 0.2) = 6.4 and 0: cross-entropy log(1 + e^-6.4)
    np.testing.assert_allclose(single["total"], [np.log1p(np.exp(-6.4))], rtol=1e-4)  # float32 log-softmax
    multi = orthohash_loss(cosine, np.array([[1.0, 1.0]], np.float32), scale=8.0, margin=0.2, multi_label=True)
    logits = np.array([6.4, -1.6])  # both classes get the margin; targets 1/2 each
    log_p = logits - np.log(np.exp(logits).sum())
    np.testing.assert_allclose(multi["total"], [-0.5 * log_p.sum()], rtol=1e-5)


def test_dpn_loss_hand_computed():
    codes = np.array([[0.5, -2.0, 1.0]], np.float32)
    targets = np.array([[1, 1, -1], [-1, 1, 1]], np.float32)
    one = dpn_loss(codes, targets, np.array([[1.0, 0.0]], np.float32), margin=1.0)
    np.testing.assert_allclose(one["total"], [0.5 + 3.0 + 2.0])  # max(0, 1 - v t) per bit, summed
    both = dpn_loss(codes, targets, np.array([[1.0, 1.0]], np.float32), margin=1.0)
    np.testing.assert_allclose(both["total"], [5.5 + (1.5 + 3.0 + 0.0)])  # summed over the label set


def test_code_classification_loss_hand_computed():
    terms = code_classification_loss(
        np.array([[2.0, 0.0]], np.float32),
        np.array([[0.5, -1.0]], np.float32),
        np.array([[1.0, 0.0]], np.float32),
        multi_label=False,
        quantization_weight=0.5,
    )
    np.testing.assert_allclose(terms["classification_loss"], [np.log1p(np.exp(-2.0))], rtol=1e-5)
    np.testing.assert_allclose(terms["total"], [np.log1p(np.exp(-2.0)) + 0.5 * 0.125], rtol=1e-5)


@pytest.mark.parametrize("name", POINTWISE)
def test_fit_lowers_the_loss_on_digits(name, tiny_config, digits):
    model = model_class(name)(tiny_config)
    model.compile()
    before = [v.numpy().copy() for v in model.hash_network.trainable_variables]
    hist = model.fit(
        digits.subset(np.arange(512)).as_dataset(32, shuffle=True, drop_remainder=True), epochs=3, verbose=0
    ).history
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["class_accuracy"][-1] > hist["class_accuracy"][0]
    assert hist["diverged"] == [0.0, 0.0, 0.0]
    assert any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, model.hash_network.trainable_variables))
    if model.hash_network.codebook is not None:  # fixed codewords never train
        np.testing.assert_array_equal(model.hash_network.codebook.numpy(), model.make_codebook())


@pytest.mark.parametrize("name", POINTWISE + ["dshgan", "coophash"])
def test_multi_label_training(name, tiny_config):
    rng = np.random.default_rng(0)
    cfg = tiny_config.replace(multi_label=True, num_classes=4, image_shape=(8, 8, 3))
    labels = (rng.random((64, 4)) > 0.6).astype(np.float32)
    labels[labels.sum(1) == 0, 0] = 1
    images = rng.integers(0, 256, (64, 8, 8, 3)).astype(np.uint8)
    model = model_class(name)(cfg)
    model.compile()
    hist = model.fit(tf.data.Dataset.from_tensor_slices((images, labels)).batch(32), epochs=2, verbose=0).history
    assert np.all(np.isfinite(hist["loss"])) and hist["diverged"] == [0.0, 0.0]
    probs = model.class_probabilities(images[:5])
    assert probs.shape == (5, 4) and np.all((probs >= 0) & (probs <= 1))


def test_dsh_gan_trains_both_players_semi_supervised(tiny_config, digits):
    from coophash_keras.baselines.dsh_gan import DSHGAN
    from coophash_keras.data import with_unlabeled

    labeled = digits.subset(np.arange(320))
    ds = with_unlabeled(labeled.as_dataset(32, shuffle=True, drop_remainder=True), digits.images[320:], 32)
    model = DSHGAN(tiny_config)
    model.compile()
    players = {"generator": model.generator, "adversary": model.hash_network.energy_head}
    before = {k: [v.numpy().copy() for v in p.trainable_variables] for k, p in players.items()}
    h = model.fit(ds, epochs=4, verbose=0).history
    for name in ("adversarial_loss", "classification_loss", "triplet_loss", "generator_loss"):
        assert np.all(np.isfinite(h[name])), name
    assert h["classification_loss"][-1] < h["classification_loss"][0]
    # both players learn: each one's weights moved. (Not "real scores above synthetic at the last
    # epoch": after 4 epochs the two scores are within 0.01-0.1 of each other and either may lead,
    # depending on the seed and on how much of the random stream earlier tests drew.)
    for k, p in players.items():
        assert any(np.abs(a - v.numpy()).max() > 0 for a, v in zip(before[k], p.trainable_variables)), k
    assert model.generate([0, 1, 2]).shape == (3, 8, 8, 1)


def test_semi_supervised_batches_are_validated(tiny_config, digits):
    from coophash_keras.baselines.dsh_gan import DSHGAN
    from coophash_keras.data import with_unlabeled

    model = DSHGAN(tiny_config)
    model.compile()
    labeled = digits.subset(np.arange(64)).as_dataset(32, drop_remainder=True)
    with pytest.raises(ValueError, match="N >= batch_size"):
        with_unlabeled(labeled, digits.images[:10], 32)
    wrong = tf.data.Dataset.zip((labeled, tf.data.Dataset.from_tensors(np.zeros((32, 6, 6, 1), np.uint8)).repeat()))
    with pytest.raises(ValueError, match="unlabeled images must have"):
        model.fit(wrong.map(lambda lab, u: (lab[0], lab[1], u)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="compile"):
        DSHGAN(tiny_config).fit(labeled, epochs=1, verbose=0)
