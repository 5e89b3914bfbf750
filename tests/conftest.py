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
    return CoopHashConfig(image_shape=(8, 8, 1), num_classes=10, num_bits=16, base_filters=8, feature_dim=32,
                          latent_dim=8, generator_filters=16, langevin_steps=3, batch_size=32)


@pytest.fixture(scope="session")
def digits():
    from coophash_keras.data import load_digits
    return load_digits()
