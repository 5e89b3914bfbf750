"""Generator diagnostics: the instruments checked against known answers, and the command."""

import json
import os

import numpy as np
import pytest

from tests.conftest import run_cli_in_process


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # The reference classifier is cached per data set: one per test session, never the user's.
    monkeypatch.setenv("COOPHASH_CACHE", str(tmp_path_factory.getbasetemp() / "reference-cache"))


def test_frechet_distance_matches_the_closed_form_of_two_gaussians():
    from coophash_keras.diagnostics import frechet_distance

    rng = np.random.default_rng(0)
    mu_a, mu_b = np.array([0.0, 1.0, -1.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    a = mu_a + sd_a * rng.standard_normal((200_000, 3))
    b = mu_b + sd_b * rng.standard_normal((200_000, 3))
    # Diagonal covariances: ||mu_a - mu_b||^2 + sum (sd_a - sd_b)^2 = 3.25 + 2 = 5.25
    assert frechet_distance(a, b) == pytest.approx(5.25, abs=0.05)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_singular_set_is_finite():
    from coophash_keras.diagnostics import frechet_distance

    rng = np.random.default_rng(1)
    collapsed = np.repeat(rng.standard_normal((1, 4)), 50, axis=0)  # one point: zero covariance
    d = frechet_distance(collapsed, rng.standard_normal((50, 4)))
    assert np.isfinite(d) and d > 1.0


def test_reference_split_holds_out_half_of_every_class_and_fashion_uses_its_test_file(digits):
    from coophash_keras.data import ImageSet
    from coophash_keras.diagnostics import reference_split

    split = reference_split(digits)
    assert not set(split.train) & set(split.held_out)
    assert len(split.train) + len(split.held_out) == len(digits)
    for c in range(10):
        n = np.sum(digits.labels == c)
        assert abs(np.sum(digits.labels[split.train] == c) - n / 2) <= 0.5
    fake = ImageSet(
        digits.images[:40], np.arange(40) % 10, 10, name="fashion_mnist", extras={"source_split": np.arange(40) % 2}
    )
    s = reference_split(fake)
    assert np.all(fake.extras["source_split"][s.train] == 0) and np.all(fake.extras["source_split"][s.held_out] == 1)
    with pytest.raises(ValueError, match="single-label"):
        reference_split(ImageSet(digits.images[:4], np.eye(4, 10, dtype=np.float32), 10, multi_label=True))


@pytest.mark.slow
def test_reference_classifier_recognises_held_out_digits_and_is_cached(digits):
    from coophash_keras.diagnostics import ReferenceClassifier, reference_split

    ref = ReferenceClassifier.for_data(digits)
    assert ref.accuracy > 0.9  # measured on the held-out half it never saw
    held = reference_split(digits).held_out
    logits, features = ref.predict(digits.images[held[:20]])
    assert logits.shape == (20, 10) and features.shape[0] == 20
    again = ReferenceClassifier.for_data(digits)  # from the cache: the same instrument
    np.testing.assert_allclose(again.predict(digits.images[:5])[0], ref.predict(digits.images[:5])[0], atol=1e-5)
    assert again.accuracy == ref.accuracy


class _ConstantGenerator:
    """A generator that ignores z: every sample of class c is the same image."""

    def __init__(self, images_per_class):
        self.images = images_per_class

    def __call__(self, z, labels):
        import tensorflow as tf

        return tf.gather(self.images, tf.argmax(labels, -1))


class _StubModel:
    def __init__(self, generator, num_classes, latent_dim=4):
        from types import SimpleNamespace

        import tensorflow as tf

        self.generator = generator
        self.config = SimpleNamespace(latent_dim=latent_dim, num_classes=num_classes)
        self.hash_network = SimpleNamespace(to_image_size=lambda x: tf.convert_to_tensor(x))


@pytest.mark.slow
def test_a_generator_that_ignores_z_has_no_spread_and_one_that_copies_real_images_matches_them(digits):
    from coophash_keras.diagnostics import generator_diagnostics, reference_split
    from coophash_keras.preprocessing import normalize_images

    held = reference_split(digits).held_out
    means = np.stack([digits.images[held][digits.labels[held] == c].mean(0) for c in range(10)])
    collapsed = generator_diagnostics(_StubModel(_ConstantGenerator(normalize_images(means)), 10), digits)
    assert collapsed["spread_ratio"]["mean"] < 1e-6
    assert collapsed["frechet"]["generated"] > 5 * collapsed["frechet"]["real"]

    class Copier:  # g(z, c): a real held-out image of class c chosen by z
        def __call__(self, z, labels):
            classes = np.asarray(labels).argmax(-1)
            pick = (np.abs(np.asarray(z)[:, 0]) * 1e6).astype(int)
            out = [
                digits.images[held][digits.labels[held] == c][p % np.sum(digits.labels[held] == c)]
                for c, p in zip(classes, pick)
            ]
            return normalize_images(np.stack(out))

    copied = generator_diagnostics(_StubModel(Copier(), 10), digits)
    assert 0.8 < copied["spread_ratio"]["mean"] < 1.2
    assert copied["class_consistency"]["generated"] > 0.9
    assert copied["frechet"]["generated"] < collapsed["frechet"]["generated"] / 3


@pytest.mark.slow
def test_diagnose_command_reports_coophash_and_dshgan_and_refuses_a_model_without_generator(tmp_path):
    for model in ("coophash", "dshgan"):
        run = tmp_path / model
        args = ["train", "--run-dir", run, "--model", model, "--epochs", "1", "--steps-per-epoch", "3"]
        assert run_cli_in_process(args + ["--set", "feature_dim=32", "--set", "latent_dim=8"]).returncode == 0
        out = run_cli_in_process(["diagnose", "--run-dir", run])
        assert out.returncode == 0, out.stderr
        assert "spread" in out.stdout and "Frechet" in out.stdout
        report = json.loads((run / "diagnostics.json").read_text())
        assert report["samples_per_class"] == report["frechet"]["samples_per_class"] == 40
        assert len(report["spread_ratio"]["per_class"]) == 10
        assert os.path.getsize(run / "samples.png") > 1000
        if model == "coophash":
            assert {"latent_real", "latent_revised", "energy", "spread_ratio_revised"} <= set(report)
            assert len(report["latent_real"]["kl_per_dim"]) == 8
        else:
            assert "energy" not in report and "revised" not in report["class_consistency"]
    run = tmp_path / "csq"
    run_cli_in_process(["train", "--run-dir", run, "--model", "csq", "--epochs", "1", "--steps-per-epoch", "2"])
    out = run_cli_in_process(["diagnose", "--run-dir", run])
    assert out.returncode == 2 and "no generator" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits):
    """(streamed, in_memory): the digits as 8x8 PNGs in class folders (folder:, rows are files), and
    the same rows with digits' own pixels in memory."""
    import dataclasses

    from PIL import Image

    from coophash_keras.data import load_dataset

    root = tmp_path_factory.mktemp("digits") / "folder"
    for i, (image, label) in enumerate(zip(digits.images, digits.labels)):
        os.makedirs(root / f"c{label}", exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / f"c{label}" / f"{i:05d}.png")
    streamed = load_dataset(f"folder:{root}", image_size=(8, 8), channels=1)
    order = np.array([int(os.path.basename(p)[:5]) for p in streamed.extras["paths"]])
    np.testing.assert_array_equal(streamed.labels, digits.labels[order])
    return streamed, dataclasses.replace(streamed, images=digits.images[order], shape=None)


@pytest.fixture
def quick_reference(monkeypatch):
    """Reference classifiers of QUICK_REFERENCE_EPOCHS epochs instead of the default 60 (900 steps
    on digits' half): the folder tests compare the streamed and in-memory paths (and bound their
    batches), which any number of epochs from 2 on exercises, the reshuffle of every epoch
    included; the default instrument's quality is test_reference_classifier_...'s. Only these
    tests' folder: sets are cached with it (their own cache keys)."""
    from coophash_keras.diagnostics.reference import ReferenceClassifier

    train = ReferenceClassifier.train.__func__
    quick = lambda cls, *args, **kwargs: train(cls, *args, **{**kwargs, "epochs": QUICK_REFERENCE_EPOCHS})  # noqa: E731
    monkeypatch.setattr(ReferenceClassifier, "train", classmethod(quick))


QUICK_REFERENCE_EPOCHS = 20


@pytest.mark.slow
def test_diagnostics_of_a_streamed_folder_equal_those_of_the_same_images_in_memory(
    digits_folder, tiny_config, quick_reference
):
    """The reference classifier trained from the pipeline, the spread, the Fréchet features, the
    posterior and the energies of file rows decoded batch by batch: the in-memory numbers bit for
    bit (the same rows, pixels, shuffle order and network batches)."""
    import keras

    from coophash_keras import CoopHash
    from coophash_keras.diagnostics import generator_diagnostics

    streamed, in_memory = digits_folder
    assert streamed.streamed and not in_memory.streamed
    rows = np.arange(0, len(streamed), 37)
    np.testing.assert_array_equal(streamed.pixels(rows), in_memory.images[rows])
    keras.utils.set_random_seed(0)
    model = CoopHash(tiny_config)
    expected = generator_diagnostics(model, in_memory)
    report = generator_diagnostics(model, streamed)
    assert report == expected
    assert report["class_consistency"]["reference_accuracy"] > 0.9  # an instrument that was trained
    assert {"latent_real", "energy", "spread_ratio_revised"} <= set(report)
    tail = streamed.name.replace(":", "_").replace("/", "_")[-40:]
    caches = [f for f in os.listdir(os.environ["COOPHASH_CACHE"]) if f.startswith(f"reference-{tail}-")]
    assert len(caches) == 4  # two instruments (.keras + .json each): a file set is keyed by its fingerprint


@pytest.mark.slow
def test_diagnostics_of_a_file_set_decode_a_bounded_batch_at_a_time(
    digits_folder, tiny_config, monkeypatch, quick_reference
):
    """Memory does not grow with the set: no pixels() of a whole split (the old code decoded both
    halves of the set into arrays), every file is decoded in pipeline batches of at most 512 rows.
    The spread's batch is shrunk to 64 rows here so that 512 bounds every batch of this small set."""
    import keras

    from coophash_keras import CoopHash
    from coophash_keras.data import ImageSet
    from coophash_keras.diagnostics import generator, generator_diagnostics, reference_split

    streamed, _ = digits_folder
    monkeypatch.setattr(generator, "SPREAD_CHUNK", 64 * 64, raising=False)
    pixels_rows, batch_rows = [], []
    pixels, as_dataset = ImageSet.pixels, ImageSet.as_dataset

    def spy_pixels(self, indices=None, batch_size=256):
        pixels_rows.append(len(self) if indices is None else len(indices))
        return pixels(self, indices, batch_size)

    def spy_as_dataset(self, batch_size, *args, **kwargs):
        if self.streamed:
            batch_rows.append(min(batch_size, len(self)))
        return as_dataset(self, batch_size, *args, **kwargs)

    monkeypatch.setattr(ImageSet, "pixels", spy_pixels)
    monkeypatch.setattr(ImageSet, "as_dataset", spy_as_dataset)
    keras.utils.set_random_seed(0)
    report = generator_diagnostics(CoopHash(tiny_config), streamed)
    held_out = len(reference_split(streamed).held_out)
    assert held_out > 512 and report["samples_per_class"] == 40
    assert max(pixels_rows, default=0) <= 512, f"pixels() decoded {max(pixels_rows)} rows into one array"
    assert batch_rows and max(batch_rows) <= 512, max(batch_rows)


def test_tensorboard_gets_the_generator_diagnostics_and_the_logs_keep_them(tmp_path, tiny_config, digits):
    import tensorflow as tf

    from coophash_keras import CoopHash
    from coophash_keras.diagnostics import GeneratorDiagnosticsCallback
    from tests.test_training_tools import read_events

    model = CoopHash(tiny_config)
    model.compile()
    log_dir = str(tmp_path / "tb")
    history = model.fit(
        digits.subset(np.arange(256)).as_dataset(32, drop_remainder=True),
        epochs=2,
        verbose=0,
        callbacks=[GeneratorDiagnosticsCallback(log_dir, digits, every_n_epochs=1)],
    )
    events = read_events(os.path.join(log_dir, "generator"))
    for tag in (
        "generator/spread_ratio",
        "generator/spread_ratio_revised",
        "generator/class_consistency",
        "generator/frechet_generated",
        "generator/frechet_revised",
        "generator/frechet_real",
        "latent/active_units",
        "latent/kl_total",
        "energy/real",
        "energy/generated",
        "energy/revised",
    ):
        values = [float(tf.make_ndarray(t)) for t in events[tag]]
        assert len(values) == 2 and np.all(np.isfinite(values)), tag
    grid = tf.io.decode_png(tf.make_ndarray(events["generator/samples"][-1])[2]).numpy()
    assert grid.shape[-1] == 3 and grid.shape[0] > 10 * 8
    assert len(history.history["gen_spread_ratio"]) == 2


@pytest.mark.parametrize("generator", ["default", "collapsed"])
@pytest.mark.slow
def test_the_default_generator_varies_with_z_and_the_check_catches_the_old_collapse(tmp_path, digits, generator):
    """The demo's command, 4 epochs instead of 20 (the old defaults had collapsed by epoch 2). With
    'collapsed', the defaults before the fix (the generator learned from the inferred z~, with a
    per-pixel mean reconstruction against the KL): the same check must fail there."""
    from coophash_keras.diagnostics import spread_ratios
    from coophash_keras.io import load_model

    old = ["--set", "generator_latent=inferred", "--set", "reconstruction_reduction=mean"]
    args = ["train", "--dataset", "digits", "--bits", "32", "--epochs", "4", "--run-dir", tmp_path / "run"]
    result = run_cli_in_process(args + (old if generator == "collapsed" else []) + ["--progress", "none"])
    assert result.returncode == 0, result.stderr
    model = load_model(str(tmp_path / "run" / "model.keras"))
    ratios = spread_ratios(model, digits.images, digits.labels, 10)
    if generator == "default":
        assert ratios.mean() >= 0.6 and ratios.min() >= 0.4, ratios
    else:
        assert ratios.mean() < 0.4, ratios


def test_sample_grid_draws_square_pixels_for_non_square_images():
    """Every image pixel is an f x f block of the grid, whatever the image's aspect ratio: an
    8 x 12 image is drawn 48 x 72, not stretched to a square tile (issue #39)."""
    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.diagnostics.grid import sample_grid

    cfg = CoopHashConfig(
        image_shape=(8, 12, 1),
        num_classes=3,
        num_bits=16,
        base_filters=8,
        feature_dim=32,
        latent_dim=8,
        generator_filters=16,
        langevin_steps=1,
    )
    grid = sample_grid(CoopHash(cfg), 3, columns=2)
    header, label_w, f = 22, 90, 6  # sample_grid's layout: 48-pixel minimum tile -> factor 6
    tile = grid[header : header + 8 * f, label_w : label_w + 12 * f, 0].astype(int)
    assert tile.max() > tile.min(), "a constant tile would pass the block check whatever its shape"
    blocks = tile.reshape(8, f, 12, f)
    assert (blocks == blocks[:, :1, :, :1]).all(), "a pixel of the image is not one square f x f block"
    assert grid[header + 8 * f, label_w, 0] == 255  # the tile ends after 8 f rows: white separator
