import os
import subprocess
import sys

import numpy as np

from conftest import REPO

from coophash_keras.baselines import SupervisedHashNet
from coophash_keras.io import load_model, save_model


def test_supervised_baseline_trains_encodes_and_round_trips(tmp_path, tiny_config, digits):
    model = SupervisedHashNet(tiny_config)
    model.compile()
    hist = model.fit(digits.subset(np.arange(512)).as_dataset(32, shuffle=True, drop_remainder=True), epochs=3,
                     verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert hist.history["classification_loss"][-1] < hist.history["classification_loss"][0]
    codes = model.encode(digits.images[:20])
    assert codes.shape == (20, 16) and set(np.unique(codes)) <= {-1, 1}
    path = str(tmp_path / "plain.keras")
    save_model(model, path)
    np.testing.assert_array_equal(load_model(path).encode(digits.images[:50]), model.encode(digits.images[:50]))
    # io.load_model registers the baseline itself: a fresh process that never imported it can load
    code = f"from coophash_keras.io import load_model; print(type(load_model({path!r})).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0 and out.stdout.strip().endswith("SupervisedHashNet"), out.stderr[-2000:]
