import numpy as np

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
