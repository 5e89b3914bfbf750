"""ITQ and LSH (coophash_keras/baselines/label_free.py) against references written out here."""

import numpy as np
import pytest


def _reference_pca(x, k):
    """The top-k principal directions by an SVD of the centred data (not a covariance)."""
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return vt[:k].T


def _reference_itq(v, iterations, r0):
    """Gong & Lazebnik's ITQ loop as in their MATLAB code (ITQ.m):
    Z = V R; B = sign(Z); [UB, ~, UA] = svd(B' V); R = UA UB'."""
    r = r0.copy()
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        ub, _, uat = np.linalg.svd(b.T @ v)
        r = uat.T @ ub.T
    return r


def _model(name, **changes):
    from coophash_keras.config import CoopHashConfig
    from coophash_keras.registry import model_class

    config = {"image_shape": (8, 8, 1), "num_classes": 10, "num_bits": 16, **changes}
    model = model_class(name)(CoopHashConfig(**config))
    model.compile()
    return model


def test_itq_rotation_is_orthogonal_its_loss_never_rises_and_it_matches_the_reference(digits):
    from coophash_keras.baselines.label_free import random_rotation

    model = _model("itq", itq_iterations=30, seed=3)
    model.fit(digits.images)
    r, losses = model.rotation, np.asarray(model.itq_losses)
    assert len(losses) == 30
    np.testing.assert_allclose(r.T @ r, np.eye(16), atol=1e-10)
    assert np.all(np.diff(losses) <= 1e-9 * losses[0]) and losses[-1] < losses[0]
    # The same fit written out independently, from the same initial rotation.
    x = np.asarray(digits.images, np.float64).reshape(len(digits), -1) / 127.5 - 1.0
    projection = model.hash_network.projection.numpy().astype(np.float64)
    # PCA directions are defined up to sign: compare the projected data, sign-aligned per direction.
    ours_v = (x - x.mean(0)) @ (projection @ r.T)  # = V W_ours, the rotation backed out
    ref_v = (x - x.mean(0)) @ _reference_pca(x, 16)
    signs = np.sign(np.sum(ours_v * ref_v, axis=0))
    np.testing.assert_allclose(ours_v, ref_v * signs, atol=1e-3)
    # The reference loop on the same V and initial rotation gives the same R and the same codes.
    r_ref = _reference_itq(ref_v * signs, 30, random_rotation(16, 3))
    np.testing.assert_allclose(r, r_ref, atol=1e-4)
    ref_codes = np.where(ref_v * signs @ r_ref >= 0, 1, -1)
    assert np.mean(model.encode(digits.images) == ref_codes) > 0.999  # float32 weights: a rare tie may differ


def test_lsh_codes_are_the_sign_of_the_centred_random_projection(digits):
    model = _model("lsh", seed=5)
    history = model.fit(digits.images[:500])
    x = np.asarray(digits.images[:500], np.float64).reshape(500, -1) / 127.5 - 1.0
    w = np.random.default_rng(5).standard_normal((64, 16))
    expected = np.where((x - x.mean(0)) @ w >= 0, 1, -1)
    assert np.mean(model.encode(digits.images[:500]) == expected) > 0.999
    assert history.history["fit_images"] == [500.0]


def test_fit_reads_a_dataset_ignores_labels_runs_callbacks_and_beats_lsh(digits):
    """model.fit on (images, labels) batches gives the same ITQ as on the arrays; the callbacks see
    one epoch; and ITQ retrieves better than LSH at the same length on digits."""
    import keras

    from coophash_keras.metrics import retrieval_metrics

    epochs = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: epochs.append((e, dict(logs))))
    a, b = _model("itq"), _model("itq")
    a.fit(digits.images)
    b.fit(digits.as_dataset(100), epochs=5, callbacks=[cb])
    np.testing.assert_array_equal(a.encode(digits.images), b.encode(digits.images))
    assert len(epochs) == 1 and epochs[0][1]["fit_images"] == len(digits)
    lsh = _model("lsh")
    lsh.fit(digits.images)
    scores = {}
    for name, m in (("itq", a), ("lsh", lsh)):
        codes = m.encode(digits.images)
        scores[name] = retrieval_metrics(codes[:300], digits.labels[:300], codes[300:], digits.labels[300:])["mAP@all"]
    assert scores["itq"] > scores["lsh"]


def test_label_free_models_refuse_too_many_bits_and_supervised_ones_need_classes():
    from coophash_keras.registry import model_class

    itq = _model("itq", num_bits=72)
    with pytest.raises(ValueError, match="72 bits need at least 72 feature dimensions"):
        itq.fit(np.zeros((100, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        model_class("orthohash")({"image_shape": (8, 8, 1), "num_classes": 0})
    model_class("lsh")({"image_shape": (8, 8, 1), "num_classes": 0})  # unlabelled data: fine


@pytest.mark.slow
def test_itq_on_a_backbone_takes_raw_pixels_and_round_trips(tmp_path):
    """With a backbone (random weights here: no download) ITQ hashes its pooled features; the saved
    model takes raw pixels and gives the same codes after loading."""
    import keras

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    model = _model("itq", image_shape=(32, 32, 3), num_bits=8, backbone="MobileNetV3Small", backbone_weights="none")
    model.fit(images)
    assert model.hash_network.feature_dim == model.hash_network.base.map_dim
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))
