import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from coophash_keras.baselines.triplet import TripletHashNet
from coophash_keras.io import load_model, save_model


def test_supervised_baseline_trains_encodes_and_round_trips(tmp_path, tiny_config, digits):
    model = TripletHashNet(tiny_config)
    model.compile()
    hist = model.fit(
        digits.subset(np.arange(512)).as_dataset(32, shuffle=True, drop_remainder=True), epochs=3, verbose=0
    )
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["classification_loss"][-1] < hist.history["classification_loss"][0]
    codes = model.encode(digits.images[:20])
    assert codes.shape == (20, 16) and set(np.unique(codes)) <= {-1, 1}
    path = str(tmp_path / "plain.keras")
    save_model(model, path)
    np.testing.assert_array_equal(load_model(path).encode(digits.images[:50]), model.encode(digits.images[:50]))
    # io.load_model registers the baseline itself: a fresh process that never imported it can load
    code = f"from coophash_keras.io import load_model; print(type(load_model({path!r})).__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("TripletHashNet"), out.stderr[-2000:]


def test_dsh_gan_trains_semi_supervised_encodes_round_trips_and_exports(tmp_path, tiny_config, digits):
    from coophash_keras.baselines.dsh_gan import DSHGAN
    from coophash_keras.data import with_unlabeled
    from export.saved_model import export_saved_model, load_descriptor

    labeled = digits.subset(np.arange(320))
    ds = with_unlabeled(labeled.as_dataset(32, shuffle=True, drop_remainder=True), digits.images[320:], 32)
    model = DSHGAN(tiny_config)
    model.compile()
    g_before = [v.numpy().copy() for v in model.generator.trainable_variables]
    hist = model.fit(ds, epochs=4, verbose=0)
    h = hist.history
    for name in ("adversarial_loss", "classification_loss", "triplet_loss", "generator_loss"):
        assert np.all(np.isfinite(h[name])), name
    assert h["classification_loss"][-1] < h["classification_loss"][0]
    # both players learn: the generator moved and the adversary scores real above synthetic
    assert any(np.abs(a - v.numpy()).max() > 0 for a, v in zip(g_before, model.generator.trainable_variables))
    assert h["real_score"][-1] > h["synthetic_score"][-1]
    codes = model.encode(digits.images[:40])
    assert codes.shape == (40, 16) and set(np.unique(codes)) <= {-1, 1}
    assert model.generate([0, 1, 2]).shape == (3, 8, 8, 1)
    path = str(tmp_path / "dshgan.keras")
    save_model(model, path)
    np.testing.assert_array_equal(load_model(path).encode(digits.images[:50]), model.encode(digits.images[:50]))
    # exports like CoopHash: the export reads only the descriptor, codes match the Keras model
    descriptor, cfg = load_descriptor(path)
    assert cfg["num_bits"] == 16
    export_dir = export_saved_model(path, str(tmp_path / "serving"), name="dshgan")
    import tensorflow as tf

    served = tf.saved_model.load(export_dir).signatures["serving_default"](
        images=tf.constant(digits.images[:40].astype(np.uint8))
    )
    np.testing.assert_array_equal(served["codes"].numpy(), codes)


def test_semi_supervised_batches_are_validated(tiny_config, digits):
    import tensorflow as tf

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
