import pytest

"""`--deterministic`: the same command gives the same model, bit for bit. The runs are in processes
of their own, since TensorFlow's op determinism stays on for the rest of a process once set."""

import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO

SMALL = ["--epochs", "2", "--steps-per-epoch", "4", "--set", "feature_dim=32", "--set", "latent_dim=8"]


def _train(*runs):
    """`coophash train` of each (run_dir, *extra) in `runs`, one after the other in one fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    argvs = [["train", "--run-dir", str(run_dir), "--progress", "none", *SMALL, *extra] for run_dir, *extra in runs]
    code = f"import sys; from coophash_keras.cli import main; sys.exit(max(main(a) for a in {argvs!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def _relaxed_codes(run_dir, images):
    from coophash_keras.io import load_model

    return np.asarray(load_model(os.path.join(run_dir, "model.keras")).relaxed_codes(images))


@pytest.mark.slow
def test_deterministic_runs_give_identical_codes_and_weights(tmp_path, digits):
    _train((tmp_path / "a", "--deterministic"))
    # b after c in one process (one TensorFlow start less): b, the second run of its process, must
    # still be a's model bit for bit, and c, the first of its process, differs by its seed only.
    _train((tmp_path / "c", "--deterministic", "--seed", "1"), (tmp_path / "b", "--deterministic"))
    images = digits.images[:200]
    a, b, c = (_relaxed_codes(tmp_path / r, images) for r in "abc")
    np.testing.assert_array_equal(a, b)  # bit for bit, not merely the same signs
    assert not np.array_equal(a, c)  # and the seed does change the model
    import json

    assert json.loads((tmp_path / "a" / "config.json").read_text())["deterministic"] is True
