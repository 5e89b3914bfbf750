import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
