"""A pretrained backbone as the shared base (config.backbone): config checks, the layer (grey to RGB,
its application's preprocessing, a config that rebuilds it without weights), weights from a file
the test writes (nothing downloads: `get_file` is made to fail wherever a download could start),
the freeze / fine-tune schedule, and every model on MobileNetV3Small (weights=None) at 32x32:
train, save/load with identical codes, export, one REST predict."""

import json

import keras
import numpy as np
import pytest

from coophash_keras import CoopHashConfig

BACKBONE = dict(backbone="MobileNetV3Small", backbone_weights="none")
SMALL = {"feature_dim": 32, "latent_dim": 8, "generator_filters": 16, "langevin_steps": 2}


@pytest.fixture(scope="module")
def digits32(digits):
    """The 8x8 digits blown up to 32x32 (each pixel 4x4): the smallest size a backbone takes."""
    from coophash_keras.data import from_arrays

    return from_arrays(np.kron(digits.images[..., 0], np.ones((4, 4), np.uint8)), digits.labels, name="digits32")


@pytest.fixture
def no_download(monkeypatch):
    """Any keras download (keras.applications' weights) fails the test."""
    from keras.src.utils import file_utils

    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:2]}")

    monkeypatch.setattr(file_utils, "get_file", refuse)


def _application(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))


# --------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "change,match",
    [
        (dict(backbone="ResNet18"), "backbone must be 'none', 'hub:PRESET' or one of"),
        (dict(backbone="hub:"), "needs a keras-hub preset"),
        (dict(backbone="MobileNetV3Small", image_shape=(28, 28, 1)), "at least 32x32"),
        (dict(backbone="MobileNetV3Small", image_shape=(32, 32, 4)), "1 \\(grey\\) or 3 \\(RGB\\) channels"),
        (dict(backbone_learning_rate_scale=2.0), "backbone_learning_rate_scale must be <= 1.0"),
        (dict(backbone_freeze_steps=-1), "backbone_freeze_steps must be >= 0"),
        (dict(synthesis_size=2), "synthesis_size must be >= 4"),
    ],
)
def test_backbone_config_is_checked(change, match):
    with pytest.raises(ValueError, match=match):
        CoopHashConfig(**change)


def test_synthesis_shape():
    from coophash_keras.models.networks import synthesis_shape

    assert synthesis_shape(CoopHashConfig(image_shape=(28, 28, 1))) == (28, 28, 1)  # conv base: unchanged
    assert synthesis_shape(CoopHashConfig(image_shape=(96, 128, 3), **BACKBONE)) == (32, 43, 3)
    assert synthesis_shape(CoopHashConfig(image_shape=(96, 96, 3), synthesis_size=48, **BACKBONE)) == (48, 48, 3)
    assert synthesis_shape(CoopHashConfig(image_shape=(32, 32, 1), synthesis_size=64, **BACKBONE)) == (32, 32, 1)


def test_cli_backbone_flags_become_config_fields():
    from coophash_keras.cli import build_parser
    from coophash_keras.cli.train import spec_from_args

    args = build_parser().parse_args(
        ["train", "--run-dir", "r", "--backbone", "EfficientNetB0", "--backbone-weights", "/w/b0.h5", "--set", "x=1"]
    )
    args.keras_verbosity = 0
    assert spec_from_args(args).overrides == {"x": 1, "backbone": "EfficientNetB0", "backbone_weights": "/w/b0.h5"}


# --------------------------------------------------------------------------------------- the layer
def test_layer_takes_grey_as_rgb_and_rebuilds_from_its_config_without_weights(no_download):
    from coophash_keras.layers import BackboneBaseNetwork

    layer = BackboneBaseNetwork((32, 32, 1), "MobileNetV3Small", feature_dim=8)
    layer.build()
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype("float32")
    pixels = np.asarray(layer.preprocess(x))
    assert pixels.shape == (2, 32, 32, 3)  # MobileNetV3 rescales inside: our pixels, in [0, 255], tiled
    np.testing.assert_allclose(pixels, np.repeat((x + 1) * 127.5, 3, axis=-1), atol=1e-4)

    config = json.loads(json.dumps(layer.get_config()))
    assert "weights" not in config and config["backbone_config"]["class_name"] == "Functional"
    rebuilt = BackboneBaseNetwork.from_config(config)
    rebuilt.build()
    rebuilt.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(rebuilt(x)), np.asarray(layer(x)))


def test_layer_applies_its_applications_preprocessing():
    from coophash_keras.layers import BackboneBaseNetwork

    layer = BackboneBaseNetwork((32, 32, 3), "ResNet50", feature_dim=8)  # caffe: BGR, ImageNet means
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet.preprocess_input((x + 1) * 127.5)
    np.testing.assert_allclose(np.asarray(layer.preprocess(x)), expected, atol=1e-3)


def test_weights_file_is_read_when_training_starts_and_then_travels_with_the_model(tmp_path, monkeypatch):
    """A keras.applications .h5 (the format of its *_notop.h5 downloads) as --backbone-weights,
    and as the 'imagenet' file keras finds in its cache; the saved model then loads and exports
    with the file gone and downloads refused."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    from coophash_keras.baselines.code_classifier import CodeClassifier
    from coophash_keras.export.weights import load_hashing_network

    source = _application(seed=7)
    path = tmp_path / "weights_mobilenet_v3_small_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    expected = source.get_weights()

    cfg = CoopHashConfig(image_shape=(32, 32, 1), num_classes=10, num_bits=16, **{**BACKBONE, **SMALL})
    model = CodeClassifier(cfg.replace(backbone_weights=str(path)))
    for a, b in zip(model.hash_network.base.backbone.get_weights(), expected):
        np.testing.assert_array_equal(a, b)

    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: str(path))  # 'imagenet' = the cached file
    model = CodeClassifier(cfg.replace(backbone_weights="imagenet"))
    for a, b in zip(model.hash_network.base.backbone.get_weights(), expected):
        np.testing.assert_array_equal(a, b)

    model.compile()
    saved = tmp_path / "model.keras"
    model.save(saved)
    path.unlink()
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: pytest.fail("tried to download"))
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    loaded = keras.models.load_model(saved)
    assert loaded.config.backbone_weights == "imagenet"  # the config keeps where they came from
    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))
    network, _ = load_hashing_network(str(saved))
    np.testing.assert_array_equal(network.base.backbone.get_weights()[0], expected[0])


# --------------------------------------------------------------------------------------- freeze, fine-tune
def test_fine_tune_adam_freezes_then_scales_the_backbone():
    from coophash_keras.models.optimizers import FineTuneAdam

    backbone, head = keras.Variable(np.zeros(3, np.float32)), keras.Variable(np.zeros(3, np.float32))
    opt = FineTuneAdam(0.01, freeze_steps=2, backbone_scale=0.1)
    opt.set_backbone_variables([backbone])
    opt.build([backbone, head])
    grads = [np.array([1.0, -2.0, 0.5], np.float32)] * 2
    for _ in range(2):
        opt.apply(grads, [backbone, head])
    np.testing.assert_array_equal(backbone.numpy(), 0.0)  # frozen
    assert np.all(head.numpy() != 0)
    before_b, before_h = backbone.numpy().copy(), head.numpy().copy()
    opt.apply(grads, [backbone, head])
    np.testing.assert_allclose(backbone.numpy() - before_b, 0.1 * (head.numpy() - before_h), rtol=1e-5)

    restored = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(restored) is FineTuneAdam and (restored.freeze_steps, restored.backbone_scale) == (2, 0.1)


def test_fine_tune_adam_under_a_mirrored_strategy(two_device_check):
    """Built eagerly in the strategy's scope, the schedule still finds the backbone's (mirrored)
    variables when each replica applies its update (tests/distributed_check.py's
    fine_tune_adam_check, in a process of its own with 2 logical CPU devices)."""
    res = two_device_check["fine_tune_adam"]
    assert res["replicas"] == 2
    assert res["after_one"][0] == [0.0, 0.0] and res["after_one"][1] != [0.0, 0.0]
    step_backbone = np.subtract(res["after_two"][0], res["after_one"][0])
    step_head = np.subtract(res["after_two"][1], res["after_one"][1])
    np.testing.assert_allclose(step_backbone, 0.5 * step_head, rtol=1e-5)


def test_conv_base_models_keep_plain_adam():
    from coophash_keras.baselines.code_classifier import CodeClassifier

    model = CodeClassifier(CoopHashConfig(num_bits=16))
    model.compile()
    assert type(model.network_optimizer) is keras.optimizers.Adam and model.backbone_variables() == []


class _FrozenThenFineTuned(keras.callbacks.Callback):
    """Backbone weights: unchanged by step 1 (backbone_freeze_steps=1), changed by step 2."""

    def on_train_begin(self, logs=None):
        self.start = [v.numpy().copy() for v in self.model.backbone_variables()]
        self.changed = []

    def on_train_batch_end(self, batch, logs=None):
        now = [v.numpy() for v in self.model.backbone_variables()]
        self.changed.append(any(not np.array_equal(a, b) for a, b in zip(self.start, now)))


# --------------------------------------------------------------------------------------- every model
# The pointwise baselines share one code path on a backbone (baselines/pointwise.py), so one of them
# stands for all; CoopHash and DSH-GAN each have their own (synthesis size). Export and serving do
# not depend on the model (test_every_model.py covers each one without a backbone), so only the
# pointwise model goes through them on a backbone.
@pytest.mark.parametrize("name, serve", [("csq", True), ("coophash", False), ("dshgan", False)])
@pytest.mark.slow
def test_model_on_a_backbone_trains_saves_exports_and_serves(name, serve, tmp_path, digits32, no_download):
    from coophash_keras.export import export_saved_model
    from coophash_keras.runs import RunSpec, train_run
    from coophash_keras.serving.client import RestClient
    from coophash_keras.serving.server import ModelServer

    watch = _FrozenThenFineTuned()
    spec = RunSpec(
        run_dir=str(tmp_path / "run"),
        model=name,
        bits=16,
        epochs=1,
        steps_per_epoch=2,
        batch_size=16,
        query_per_class=2,
        labels_per_class=8,
        overrides={**BACKBONE, **SMALL, "backbone_freeze_steps": 1, "backbone_learning_rate_scale": 1.0},
        verbose=0,
    )
    result = train_run(spec, data=digits32, extra_callbacks=[watch])
    assert watch.changed == [False, True]
    assert all(np.all(np.isfinite(v)) for v in result.history.values())
    if name in ("coophash", "dshgan"):  # generator at the synthesis size (32 with a backbone)
        assert result.model.generator.image_shape == (32, 32, 1)

    images = digits32.images[:8]
    loaded = keras.models.load_model(str(tmp_path / "run" / "model.keras"))
    np.testing.assert_array_equal(loaded.encode(images), result.model.encode(images))

    if not serve:
        return
    export_saved_model(str(tmp_path / "run" / "model.keras"), str(tmp_path / "models"), name)
    with ModelServer(str(tmp_path / "models"), port=0, grpc_port=None) as server:
        out = RestClient(server.url, name).hash_images(images[:3])
    np.testing.assert_array_equal(out["codes"], result.model.encode(images[:3]))
    assert out["class_probs"].shape == (3, 10) and np.all(np.isfinite(out["energy"]))


def test_coophash_revises_small_images_and_reads_them_through_the_upsampling(digits32):
    """At 64x64 with synthesis_size 32: the generator makes 32x32 images, Langevin moves them by the
    energy's gradient through the upsampling, and recover returns full-size images."""
    from coophash_keras import CoopHash
    from coophash_keras.data import from_arrays

    images64 = from_arrays(np.kron(digits32.images[:16, ..., 0], np.ones((2, 2), np.uint8)), digits32.labels[:16])
    cfg = CoopHashConfig(image_shape=(64, 64, 1), num_classes=10, num_bits=16, **{**BACKBONE, **SMALL})
    model = CoopHash(cfg)
    model.compile()
    d = model.hash_network
    assert d.synthesis_shape == (32, 32, 1) and model.generator.image_shape == (32, 32, 1)
    labels = model.labels_to_multi_hot(images64.labels[:4])
    pairs = model.generate_contrastive_pairs(labels, np.array([1, 2], np.int32))
    assert pairs.positive.shape == (4, 32, 32, 1)
    revised, grad_norm = model.langevin_revise(pairs.positive, labels, steps=2)
    assert revised.shape == (4, 32, 32, 1) and float(grad_norm) > 0
    view = np.asarray(d.synthetic_view(np.asarray(images64.images[:4], np.float32) / 127.5 - 1))
    assert view.shape == (4, 64, 64, 1)
    assert model.recover(images64.images[:4], langevin_steps=1).shape == (4, 64, 64, 1)


# --------------------------------------------------------------------------------------- keras-hub
@pytest.mark.slow
def test_keras_hub_preset_folder_as_backbone(tmp_path, digits32):
    """A keras-hub image backbone from a local preset folder (what a machine without internet
    uses): trains a step, saves/loads with identical codes, and its export rebuilds it from the
    saved architecture with the preset folder gone."""
    keras_hub = pytest.importorskip("keras_hub")
    import shutil

    import tensorflow as tf

    from coophash_keras.baselines.code_classifier import CodeClassifier
    from coophash_keras.export import export_saved_model

    preset = tmp_path / "tiny_resnet"
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
    ).save_to_preset(str(preset))
    keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=1 / 255.0, offset=-0.5).save_to_preset(str(preset))

    cfg = CoopHashConfig(
        image_shape=(32, 32, 1), num_classes=10, num_bits=16, backbone=f"hub:{preset}", backbone_weights="imagenet"
    )
    model = CodeClassifier(cfg.replace(feature_dim=32, batch_size=16))
    assert model.hash_network.base.pixel_offset == -0.5
    model.compile()
    model.fit(digits32.subset(np.arange(32)).as_dataset(16, drop_remainder=True), epochs=1, verbose=0)
    saved = tmp_path / "model.keras"
    model.save(saved)
    shutil.rmtree(preset)

    images = digits32.images[:8]
    loaded = keras.models.load_model(saved)
    np.testing.assert_array_equal(loaded.encode(images), model.encode(images))
    path = export_saved_model(str(saved), str(tmp_path / "models"), "hub", warmup=False)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(out["codes"].numpy(), model.encode(images))
