import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class CLIResult:
    """What subprocess.run(capture_output=True, text=True) returns, for an in-process CLI call."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli_in_process(args):
    """`coophash ARGS` through coophash_keras.cli.main in this process: the same parser, handlers and
    exit codes as the console command, without a fresh TensorFlow import (seconds per call on 2
    cores). Tests of the entry point itself (`python -m coophash_keras.cli`) use a subprocess."""
    import contextlib
    import io

    from coophash_keras.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors and --help exit; their code is the command's
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CLIResult(code or 0, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def two_device_check():
    """The JSON line of tests/distributed_check.py, run once per session in a fresh process (2
    logical CPU devices must be set before TensorFlow starts): MirroredStrategy checks of CoopHash
    (test_distribute.py) and of FineTuneAdam (test_backbone.py), one TensorFlow start for both."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "distributed_check.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def tiny_config():
    """The smallest CoopHash that still exercises every part (8x8 digits, 16 bits)."""
    from coophash_keras import CoopHashConfig

    return CoopHashConfig(
        image_shape=(8, 8, 1),
        num_classes=10,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=3,
        batch_size=32,
    )


@pytest.fixture(scope="session")
def digits():
    from coophash_keras.data import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory, digits):
    """(model, path of its .keras file): a 16-bit CoopHash trained 2 epochs on 256 digits, shared by
    the export, serving and index tests."""
    import numpy as np

    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.io import save_model

    cfg = CoopHashConfig(
        image_shape=(8, 8, 1),
        num_classes=10,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=2,
    )
    model = CoopHash(cfg)
    model.compile()
    model.fit(digits.subset(np.arange(256)).as_dataset(32, drop_remainder=True), epochs=2, verbose=0)
    path = str(tmp_path_factory.mktemp("trained") / "model.keras")
    save_model(model, path)
    return model, path
