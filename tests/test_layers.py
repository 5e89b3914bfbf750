import keras
import numpy as np
import pytest

from coophash_keras.layers import (
    ClassifierHead,
    ConvBaseNetwork,
    EnergyHead,
    HashHead,
    InferenceHead,
    PairGenerator,
    num_downsamplings,
)
from coophash_keras.models import HashNetwork, MultipurposeDescriptor

BASE = {"image_shape": (8, 8, 1), "base_filters": 8, "feature_dim": 16}


@pytest.mark.parametrize("shape,n", [((8, 8, 1), 1), ((28, 28, 1), 3), ((32, 32, 3), 3), ((64, 48, 3), 4)])
@pytest.mark.parametrize("pooling", ["stride", "max", "avg"])
def test_base_and_generator_are_sized_from_the_input(shape, n, pooling):
    assert num_downsamplings(*shape[:2]) == n
    base = ConvBaseNetwork(shape, base_filters=8, feature_dim=16, pooling=pooling, convs_per_block=2, dropout=0.5)
    feats = base(np.zeros((2,) + shape, np.float32))
    assert tuple(feats.shape) == (2, 16)
    assert (
        sum("block" in v.path or "down" in v.path for v in base.weights) == n * 2 * 2
    )  # 2 convs (kernel, bias) per block
    gen = PairGenerator(shape, latent_dim=4, num_classes=3, filters=16)
    out = gen(np.zeros((2, 4), np.float32), np.eye(3, dtype=np.float32)[:2])
    assert tuple(out.shape) == (2,) + shape
    assert float(np.abs(out).max()) <= 1.0  # tanh: the data range


def test_energy_head_selects_class_energies_for_one_and_multi_hot_labels():
    e = np.array([[1.0, 2.0, 4.0]], np.float32)
    assert float(EnergyHead.select(e, np.array([[0, 1, 0]], np.float32))[0]) == pytest.approx(2.0)
    assert float(EnergyHead.select(e, np.array([[1, 0, 1]], np.float32))[0]) == pytest.approx(2.5)


def test_hash_head_rejects_bits_not_multiple_of_8():
    with pytest.raises(ValueError, match="multiple of 8"):
        HashHead(12)


LAYERS = [
    lambda: ConvBaseNetwork((8, 8, 1), 8, 16),
    lambda: EnergyHead(5, hidden_dim=7),
    lambda: InferenceHead(6),
    lambda: ClassifierHead(5),
    lambda: HashHead(16),
    lambda: PairGenerator((8, 8, 1), 4, 5, 16),
    lambda: ConvBaseNetwork((28, 28, 1), 8, 16, pooling="max", convs_per_block=2, dropout=0.3),
    lambda: MultipurposeDescriptor(BASE, 5, 16, 4),
    lambda: MultipurposeDescriptor(BASE, 5, 16, 4, inference_reads_map=True),
    lambda: HashNetwork(BASE, 5, 16, hash_layer="batchnorm", class_readout="codebook", readout_scale=4.0),
    lambda: HashNetwork({**BASE, "pooling": "avg"}, 5, 16, hash_layer="tanh", class_readout="codes"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_every_layer_round_trips_its_config(make):
    layer = make()
    clone = layer.__class__.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    # and through Keras' registry
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()


def test_descriptor_heads_shapes():
    d = MultipurposeDescriptor(BASE, 5, 16, 4)
    d.build()
    out = d(np.zeros((3, 8, 8, 1), np.float32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "features": (3, 16),
        "class_energies": (3, 5),
        "logits": (3, 5),
        "hash": (3, 16),
    }
    z_mean, z_log_var = d.infer_latent(np.zeros((3, 8, 8, 1), np.float32))
    assert tuple(z_mean.shape) == tuple(z_log_var.shape) == (3, 4)
    names = {v.path for v in d.descriptor_variables}
    assert not any("inference_head" in n for n in names)  # trained by the generator optimizer


def test_hash_network_codebook_readout_is_scaled_cosine_and_energy_is_logsumexp():
    codebook = np.array([[1, 1, -1, -1] * 4, [1, -1, 1, -1] * 4], np.float32)
    net = HashNetwork(BASE, 2, 16, hash_layer="linear", class_readout="codebook", codebook=codebook, readout_scale=3.0)
    net.build()
    np.testing.assert_array_equal(net.codebook.numpy(), codebook)
    codes = np.array([[2, 2, -2, -2] * 4, [1, 0, 0, 0] * 4], np.float32)
    logits = net.class_logits_from_codes(codes).numpy()
    # first row is codeword 0 scaled: cosine 1 with it, 0 with codeword 1; second row: 1/2 with both
    np.testing.assert_allclose(logits, 3.0 * np.array([[1.0, 0.0], [0.5, 0.5]]), atol=1e-6)
    out = net.serving_outputs(np.zeros((3, 8, 8, 1), np.float32))
    np.testing.assert_allclose(
        out["energy"].numpy(), np.log(np.exp(out["class_logits"].numpy()).sum(-1)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="codebook must be"):
        HashNetwork(BASE, 3, 16, class_readout="codebook", codebook=codebook)
    with pytest.raises(ValueError, match="pooling"):
        ConvBaseNetwork((8, 8, 1), pooling="median")
