import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from PIL import Image

from coophash_keras.metrics import hamming_rank


@pytest.fixture(scope="module")
def trained(trained_tiny):
    return trained_tiny


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory, digits):
    from coophash_keras.export import export_saved_model

    base = tmp_path_factory.mktemp("models")
    path = export_saved_model(
        trained[1],
        str(base),
        "coophash",
        database_images=digits.images[300:700],
        database_ids=np.arange(300, 700),
        search_k=7,
    )
    return str(base), path


def png_bytes(image):
    buf = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_layout_and_saved_model_cli(exported):
    base, path = exported
    assert path == os.path.join(base, "coophash", "1")
    for f in ("saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(path, f)), f
    assert "name: 'coophash'" in open(os.path.join(base, "models.config")).read()
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    out = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for sig in ("serving_default", "hash_image_bytes", "search", "search_image_bytes"):
        assert f"signature_def['{sig}']" in out.stdout
    assert "DT_UINT8" in out.stdout and "DT_INT8" in out.stdout and "tensorflow/serving/predict" in out.stdout


def test_loaded_saved_model_gives_identical_codes(trained, exported, digits):
    model, _ = trained
    loaded = tf.saved_model.load(exported[1])
    images = digits.images[:200]
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_array_equal(out["codes"].numpy(), model.encode(images))
    np.testing.assert_array_equal(out["packed"].numpy(), model.encode(images, packed=True))
    np.testing.assert_allclose(out["class_probs"].numpy(), model.class_probabilities(images), atol=1e-5)
    assert out["energy"].shape == (200,) and np.all(np.isfinite(out["energy"].numpy()))
    # encoded PNGs through hash_image_bytes give the same codes as the uint8 path
    pngs = tf.constant([png_bytes(im) for im in images[:20]])
    out_b = loaded.signatures["hash_image_bytes"](image_bytes=pngs)
    np.testing.assert_array_equal(out_b["codes"].numpy(), out["codes"].numpy()[:20])


def test_photos_sent_as_bytes_get_the_codes_they_are_indexed_with(trained, exported, digits, tmp_path):
    # Colour JPEGs of another size than the model's: the package decodes files with PIL (greyscale
    # conversion, antialiased resize), the export in the graph; the codes must be the same.
    from coophash_keras.data.files import decode_image

    model, _ = trained
    loaded = tf.saved_model.load(exported[1])
    h, w, c = model.config.image_shape
    rng = np.random.default_rng(0)
    payloads, pixels = [], []
    for k, image in enumerate(digits.images[:24]):
        big = Image.fromarray(image[..., 0]).resize((w * 5 + k, h * 3 + 2 * k), Image.BICUBIC).convert("RGB")
        tinted = np.clip(np.asarray(big) * rng.uniform(0.7, 1.0, 3), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(tinted).save(buf, format="JPEG", quality=85)
        (tmp_path / f"{k}.jpg").write_bytes(buf.getvalue())
        payloads.append(buf.getvalue())
        pixels.append(decode_image(str(tmp_path / f"{k}.jpg"), (h, w), c))
    out = loaded.signatures["hash_image_bytes"](image_bytes=tf.constant(payloads))
    np.testing.assert_array_equal(out["codes"].numpy(), model.encode(np.stack(pixels)))


def test_search_signature_matches_brute_force_ranking(trained, exported, digits):
    model, _ = trained
    loaded = tf.saved_model.load(exported[1])
    queries = digits.images[:30]
    out = loaded.signatures["search"](images=tf.constant(queries))
    db_codes = model.encode(digits.images[300:700])
    expected = hamming_rank(model.encode(queries), db_codes, topk=7) + 300
    np.testing.assert_array_equal(out["ids"].numpy(), expected)
    dist = (model.encode(queries)[:, None, :] != db_codes[None]).sum(-1)
    np.testing.assert_array_equal(out["distances"].numpy(), np.sort(dist, axis=1)[:, :7])
    # one call from encoded images to neighbours: the same answer
    from_bytes = loaded.signatures["search_image_bytes"](image_bytes=tf.constant([png_bytes(q) for q in queries]))
    np.testing.assert_array_equal(from_bytes["ids"].numpy(), out["ids"].numpy())


def test_versions_and_bad_exports(trained, exported, tmp_path):
    from coophash_keras.export import export_saved_model, next_version

    base, _ = exported
    assert next_version(base, "coophash") == 2
    with pytest.raises(ValueError, match="already exists"):
        export_saved_model(trained[1], base, "coophash", version=1)
    with pytest.raises(FileNotFoundError):
        export_saved_model(str(tmp_path / "none.keras"), base)
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a .keras model file"):
        export_saved_model(str(tmp_path / "junk.keras"), base)
    with pytest.raises(ValueError, match="model name"):
        export_saved_model(trained[1], base, "bad/name")


def test_export_does_not_import_training_code(trained, tmp_path):
    code = f"""
import sys, json
from coophash_keras.export import export_saved_model
export_saved_model({trained[1]!r}, {str(tmp_path)!r}, "m")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("coophash_keras"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "coophash_keras.models.descriptor" in modules
    training_code = (
        "coophash_keras.models.coophash",
        "coophash_keras.models.base",
        "coophash_keras.baselines.pointwise",
        "coophash_keras.losses",
        "coophash_keras.models.langevin",
        "coophash_keras.runs",
    )
    for training in training_code:
        assert training not in modules
