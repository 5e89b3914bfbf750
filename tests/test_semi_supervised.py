"""The few-label switches: augmentation specs, FixMatch pseudo-labels (CoopHash and the pointwise
baselines), classification through the codes, realness-weighted synthetic classification,
recovery consistency. Each checked against a hand computation or the formula it claims."""

import numpy as np
import pytest
import tensorflow as tf

from coophash_keras import CoopHash
from coophash_keras.data.augment import Augmenter, augment_dataset, parse_augmentation
from coophash_keras.losses import pseudo_label_loss
from coophash_keras.models.base import Batch
from coophash_keras.preprocessing import normalize_images


def test_augmentation_specs_parse_and_reject_bad_items():
    assert parse_augmentation("flip, translate=0.1") == [("flip", None), ("translate", 0.1)]
    assert parse_augmentation("") == []
    for bad, match in [
        ("spin", "unknown augmentation"),
        ("flip=1", "takes no"),
        ("zoom", "needs"),
        ("zoom=x", "not a number"),
        ("translate=0.9", "outside"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_augmentation(bad)


def test_augmenter_keeps_pixels_in_range_and_the_pipeline_applies_it(digits):
    strong = Augmenter("flip,translate=0.2,contrast=0.5,noise=40,erase=0.3,blur=1.0", seed=3)
    out = strong(digits.images[:32]).numpy()
    assert out.shape == (32, 8, 8, 1) and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, digits.images[:32])
    assert not Augmenter("")  # an empty spec is no augmentation
    ds = digits.subset(np.arange(64)).as_dataset(32)
    same = next(iter(augment_dataset(ds, "", 0)))[0].numpy()
    np.testing.assert_array_equal(same, digits.images[:32])
    changed = next(iter(augment_dataset(ds, "translate=0.3,noise=30", 0)))
    assert changed[0].dtype == tf.float32 and not np.allclose(changed[0].numpy(), digits.images[:32])
    np.testing.assert_array_equal(changed[1].numpy(), digits.labels[:32])  # labels untouched


def test_pseudo_label_loss_hand_computed():
    weak = np.array([[4.0, 0.0, 0.0], [0.2, 0.1, 0.0]], np.float32)  # confident, then not
    strong = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]], np.float32)
    loss, kept = pseudo_label_loss(strong, weak, threshold=0.9, multi_label=False)
    ce = -np.log(np.exp(1.0) / np.exp([1.0, 2.0, 0.0]).sum())  # target class 0 from the weak view
    np.testing.assert_allclose(loss, [ce, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(kept, [1.0, 0.0])
    multi, kept_m = pseudo_label_loss(np.zeros((1, 2), np.float32), np.array([[5.0, 0.0]], np.float32), 0.9, True)
    # class 0 confident (p 0.993 -> target 1), class 1 not (p 0.5): mean of [log 2, 0]
    np.testing.assert_allclose(multi, [np.log(2.0) / 2], rtol=1e-5)
    np.testing.assert_allclose(kept_m, [0.5])


def test_classifier_reading_the_codes(tiny_config, digits):
    model = CoopHash(tiny_config.replace(classifier_input="codes"))
    model.compile()
    net = model.hash_network
    x = normalize_images(digits.images[:8])
    out = net.serving_outputs(x)
    codes = net.hash_head(net.features(x))
    np.testing.assert_allclose(out["class_logits"].numpy(), net.classifier_head(codes).numpy(), atol=1e-6)
    assert net.classifier_head.logits.kernel.shape == (tiny_config.num_bits, tiny_config.num_classes)


def test_codebook_read_out_is_orthohash_on_the_codes(tiny_config, digits, tmp_path):
    import keras

    from coophash_keras.baselines.orthohash import orthohash_loss
    from coophash_keras.layers.codebooks import random_codebook

    cfg = tiny_config.replace(classifier_input="codebook", orthohash_scale=6.0, orthohash_margin=0.3, seed=4)
    model = CoopHash(cfg)
    model.compile()
    net = model.hash_network
    book = net.classifier_head.codebook.numpy()
    np.testing.assert_array_equal(book, random_codebook(10, 16, 4, tries=1))  # OrthoHash's draw, from the seed
    assert not net.classifier_head.trainable_weights and not any(
        v is net.classifier_head.codebook for v in model.trainable_variables
    )
    x = normalize_images(digits.images[:8])
    codes = net.hash_head(net.features(x)).numpy()
    cosine = (codes / np.linalg.norm(codes, axis=1, keepdims=True)) @ (book / np.sqrt(16)).T
    logits = net.serving_outputs(x)["class_logits"].numpy()
    np.testing.assert_allclose(logits, 6.0 * cosine, rtol=1e-4, atol=1e-5)
    # the labelled term is OrthoHash's loss (the margin off the true class's cosine), the same number
    labels = tf.one_hot(digits.labels[:8], 10)
    np.testing.assert_allclose(
        model.labelled_classification_loss(logits, labels).numpy(),
        orthohash_loss(cosine.astype(np.float32), labels, 6.0, 0.3, False)["total"].numpy(),
        rtol=1e-4,
    )
    # the codebook travels with the weights: a reloaded model reads out the same logits
    model.fit(digits.images[:64], digits.labels[:64], batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.hash_network.classifier_head.codebook.numpy(), book)
    np.testing.assert_allclose(
        loaded.hash_network.serving_outputs(x)["class_logits"].numpy(),
        model.hash_network.serving_outputs(x)["class_logits"].numpy(),
        atol=1e-5,
    )


def test_codebook_read_out_takes_orthohash_multi_label_form(tiny_config):
    """A multi-hot label under the codebook read-out: cross-entropy of s * (cos - m * y) against the
    label set normalised to sum to 1 (OrthoHash's form), not the sigmoid loss of the Dense read-out."""
    model = CoopHash(tiny_config.replace(classifier_input="codebook", multi_label=True, orthohash_scale=4.0))
    cosine = np.array([[0.5, -0.25, 0.0, 0.75] + [0.0] * 6], np.float32)
    labels = np.array([[1.0, 0.0, 0.0, 1.0] + [0.0] * 6], np.float32)
    m = tiny_config.orthohash_margin
    shifted = 4.0 * (cosine[0] - m * labels[0])
    log_p = shifted - np.log(np.exp(shifted).sum())
    by_hand = -(0.5 * log_p[0] + 0.5 * log_p[3])
    got = model.labelled_classification_loss(tf.constant(4.0 * cosine), tf.constant(labels)).numpy()
    np.testing.assert_allclose(got, [by_hand], rtol=1e-5)


def test_the_margin_is_only_for_the_codebook_read_out(tiny_config):
    from coophash_keras import losses

    logits, labels = tf.constant([[2.0, 1.0, 0.0]]), tf.constant([[0.0, 1.0, 0.0]])
    plain = CoopHash(tiny_config.replace(num_classes=3, classifier_input="codes"))
    np.testing.assert_allclose(
        plain.labelled_classification_loss(logits, labels), losses.classification_loss(logits, labels, False)
    )
    book = CoopHash(tiny_config.replace(num_classes=3, classifier_input="codebook", orthohash_margin=0.25))
    # s * m = 8 * 0.25 = 2 off the true class: logits [2, -1, 0], cross-entropy of class 1
    expected = -np.log(np.exp(-1.0) / np.exp([2.0, -1.0, 0.0]).sum())
    np.testing.assert_allclose(book.labelled_classification_loss(logits, labels), [expected], rtol=1e-5)


def _batch_and_pairs(model, digits, n=16):
    from coophash_keras.models.coophash import ContrastivePairs

    x = normalize_images(tf.constant(digits.images[:n]))
    c = tf.one_hot(digits.labels[:n], 10)
    c_neg = tf.one_hot((digits.labels[:n] + 1) % 10, 10)
    rev = tf.random.stateless_uniform([n, 8, 8, 1], [0, 2], -1, 1)
    return x, c, ContrastivePairs(rev, -rev, c, c_neg, tf.zeros([n, 8]))


def test_realness_weighting_scales_each_synthetic_term(tiny_config, digits):
    from coophash_keras import losses
    from coophash_keras.layers import EnergyHead

    cfg = tiny_config.replace(synthetic_classification_weight=1.0, base_dropout=0.0)  # one network for both passes
    plain = CoopHash(cfg)
    plain.compile()
    weighted = CoopHash(cfg.replace(synthetic_realness_weighting=True))
    weighted.compile()
    weighted.set_weights(plain.get_weights())
    x, c, pairs = _batch_and_pairs(plain, digits)
    batch = Batch(x, c, None)
    t0 = plain.descriptor_losses(batch, pairs)["total"]
    t1 = weighted.descriptor_losses(batch, pairs)["total"]
    scored = plain.hash_network(pairs.images())
    real = EnergyHead.select(plain.hash_network(x)["class_energies"], c)
    realness = tf.sigmoid(EnergyHead.select(scored["class_energies"], pairs.labels()) - tf.reduce_mean(real))
    ce = losses.classification_loss(scored["logits"], pairs.labels(), False)
    n = 16
    expected = 0.5 * ((realness * ce - ce)[:n] + (realness * ce - ce)[n:])
    np.testing.assert_allclose(t1 - t0, expected, rtol=1e-4, atol=1e-5)


def test_unlabeled_terms_are_computed_and_reach_the_logs(tiny_config, digits):
    from coophash_keras.data import with_unlabeled

    cfg = tiny_config.replace(
        pseudo_label_weight=1.0,
        pseudo_label_threshold=0.0,  # keep every pseudo-label, so the term is never empty
        recovery_consistency_weight=1.0,
        unlabeled_batch_ratio=2,
    )
    assert CoopHash.uses_unlabeled(cfg) and not CoopHash.uses_unlabeled(tiny_config)
    model = CoopHash(cfg)
    model.compile()
    ds = with_unlabeled(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), digits.images[200:], 64)
    hist = model.fit(ds, epochs=2, verbose=0).history
    assert hist["pseudo_label_rate"] == [1.0, 1.0]
    assert all(v > 0 for v in hist["pseudo_label_loss"] + hist["recovery_consistency_loss"])
    # per anchor: the unlabeled batch's mean, broadcast (the global-batch scaling stays right)
    u = normalize_images(tf.constant(digits.images[300:332]))
    out = model.unlabeled_losses(u, model.hash_network(tf.zeros([32, 8, 8, 1])), 16)
    for name in ("pseudo_label_loss", "recovery_consistency_loss", "total"):
        assert out[name].shape == (16,) and np.all(np.isfinite(out[name])) and np.ptp(out[name].numpy()) < 1e-6


def test_pointwise_baseline_pseudo_labels(tiny_config, digits):
    from coophash_keras.baselines.code_classifier import CodeClassifier
    from coophash_keras.data import with_unlabeled

    cfg = tiny_config.replace(pseudo_label_weight=1.0, pseudo_label_threshold=0.0)
    assert CodeClassifier.uses_unlabeled(cfg) and not CodeClassifier.uses_unlabeled(tiny_config)
    model = CodeClassifier(cfg)
    model.compile()
    ds = with_unlabeled(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), digits.images[200:], 32)
    hist = model.fit(ds, epochs=2, verbose=0).history
    assert hist["pseudo_label_rate"] == [1.0, 1.0] and all(v > 0 for v in hist["pseudo_label_loss"])
    # without the switch the unlabeled batch is ignored
    off = CodeClassifier(tiny_config)
    off.compile()
    assert "pseudo_label_loss" not in off.fit(ds, epochs=1, verbose=0).history
