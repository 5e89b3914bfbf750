"""coophash_keras.beam: the Beam pipeline over image files gives `coophash encode`'s codes (PNGs at
the model's size, and colour JPEGs of other sizes with EXIF orientations), in
codes-1 Parquet shards; bad files are skipped and counted; a pattern that matches nothing is one
line. scripts/setup.sh installs the [beam] extra, so these run on a fresh machine."""

import glob
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_cli_in_process

pytest.importorskip("apache_beam", reason="the [beam] extra: pip install -e '.[beam]' (scripts/setup.sh does)")
import pyarrow.parquet as pq

from coophash_keras.beam import HashImageBytesHandler, NoFilesMatchedError, encode_files

# Beam's own local engine: DirectRunner's batch runner, with 2 worker processes.
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def exported(trained_tiny, tmp_path_factory):
    from coophash_keras.export import export_saved_model

    return export_saved_model(trained_tiny[1], str(tmp_path_factory.mktemp("models")), "m")


def write_pngs(folder, images, start=0):
    """One greyscale PNG per image: PIL (`coophash encode`) and TensorFlow (the signature) decode
    PNGs to the same pixels, and at the model's size neither resizes."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(images, start):
        path = os.path.join(folder, f"{i:04d}.png")
        with open(path, "wb") as fh:
            fh.write(tf.io.encode_png(image).numpy())
        paths.append(path)
    return paths


def write_photos(folder, images):
    """Colour JPEGs of other sizes than the model's, some turned by an EXIF orientation: what a
    camera makes. The export decodes them in the graph to the pixels PIL gives (image_decode.py)."""
    import io

    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        big = Image.fromarray(image[..., 0]).resize((20 + i, 14 + 2 * i), Image.BICUBIC).convert("RGB")
        exif = Image.Exif()
        exif[0x0112] = (1, 3, 6, 8)[i % 4]
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=85, exif=exif.tobytes())
        paths.append(os.path.join(folder, f"{i:04d}.jpg"))
        with open(paths[-1], "wb") as fh:
            fh.write(buf.getvalue())
    return paths


def write_bad_files(folder):
    """A zero-byte file, a truncated PNG and text named .png: {path: why it is bad}."""
    os.makedirs(folder, exist_ok=True)
    png = tf.io.encode_png(np.zeros((8, 8, 1), np.uint8)).numpy()
    bad = {"empty.png": b"", "truncated.png": png[: len(png) // 2], "text.png": b"not an image\n"}
    for name, data in bad.items():
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    return [os.path.join(folder, name) for name in bad]


def read_shards(prefix):
    """{path: packed code bytes} and each shard's key-value metadata."""
    shards = sorted(glob.glob(prefix + "-*.parquet"))
    assert shards, f"no shard at {prefix}-*"
    codes, metadata = {}, []
    for shard in shards:
        table = pq.read_table(shard)
        assert table.schema.field("path").type == "string"
        assert str(table.schema.field("code").type) == "fixed_size_binary[2]"  # 16 bits
        metadata.append({k.decode(): v.decode() for k, v in pq.read_metadata(shard).metadata.items()})
        for path, code in zip(table.column("path").to_pylist(), table.column("code").to_pylist()):
            assert path not in codes, f"{path} twice"
            codes[path] = code
    return codes, metadata


def encode_packed(model_file, paths):
    """`coophash encode --packed` of the files: {path: packed code bytes}."""
    out = run_cli_in_process(["encode", "--run-dir", model_file, "--packed", *paths])
    assert out.returncode == 0, out.stderr
    return {path: bytes.fromhex(code) for path, code in (line.split("\t") for line in out.stdout.splitlines())}


@pytest.mark.slow
def test_two_worker_pipeline_gives_coophash_encode_codes_and_skips_bad_files(trained_tiny, exported, digits, tmp_path):
    from coophash_keras.io import model_fingerprint

    good = write_pngs(tmp_path / "photos", digits.images[:200])
    good += write_pngs(tmp_path / "photos" / "more", digits.images[200:300], start=200)  # ** crosses folders
    good += write_photos(tmp_path / "photos" / "camera", digits.images[300:340])
    bad = write_bad_files(tmp_path / "photos" / "bad")
    summary = encode_files([str(tmp_path / "photos" / "**")], exported, str(tmp_path / "codes" / "c"), TWO_WORKERS)
    assert (summary["encoded"], summary["skipped"]) == (340, 3)

    codes, metadata = read_shards(str(tmp_path / "codes" / "c"))
    assert sorted(codes) == sorted(good)  # every good file once (its batch neighbours' bad files did not drop it)
    assert not set(bad) & set(codes)
    for meta in metadata:
        assert meta["coophash.format"] == "codes-1"
        assert meta["coophash.num_bits"] == "16"
        assert meta["coophash.model_version"] == model_fingerprint(trained_tiny[1])
    # Beam batches differently from `coophash encode` (256 per call); the codes are equal bit for bit.
    assert codes == encode_packed(trained_tiny[1], good)


def test_bad_image_in_a_batch_keeps_its_neighbours_codes(exported, digits):
    handler = HashImageBytesHandler(exported)
    model = handler.load_model()
    pngs = [tf.io.encode_png(image).numpy() for image in digits.images[:6]]
    batch = pngs[:2] + [b"not an image"] + pngs[2:5] + [pngs[5][:40]]  # the bad ones at 2 and 6
    results = handler.run_inference(batch, model)
    assert [r.example for r in results] == batch
    expected = model.signatures["hash_image_bytes"](image_bytes=tf.constant(pngs[:5]))["packed"].numpy()
    np.testing.assert_array_equal(np.stack([r.inference for i, r in enumerate(results) if i not in (2, 6)]), expected)
    assert results[2].inference.startswith("Unknown image file format")
    assert results[6].inference.startswith("Invalid PNG")


def test_in_process_pipeline_logs_and_counts_each_bad_file(trained_tiny, exported, digits, tmp_path, caplog):
    good = write_pngs(tmp_path / "in", digits.images[:5])
    bad = write_bad_files(tmp_path / "in")
    with caplog.at_level(logging.WARNING, logger="coophash_keras.beam"):
        summary = encode_files([str(tmp_path / "in" / "*.png")], exported, str(tmp_path / "out" / "c"), batch_size=4)
    assert (summary["encoded"], summary["skipped"]) == (5, 3)
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    assert sorted(line.split(":")[0] for line in skipped) == sorted(f"skipped {p}" for p in bad)
    codes, _ = read_shards(str(tmp_path / "out" / "c"))
    assert codes == encode_packed(trained_tiny[1], good)
    # the shards become an index with `index build --from-shards`, checked against the model
    from coophash_keras.index import HammingIndex

    index_file = tmp_path / "photos.idx"
    shards = str(tmp_path / "out" / "c*")
    out = run_cli_in_process(
        ["index", "build", "--from-shards", shards, "--model", trained_tiny[1], "--out", index_file]
    )
    assert out.returncode == 0, out.stderr
    index = HammingIndex.load(str(index_file))
    paths = index.paths_for(index.ids).tolist()
    assert sorted(paths) == sorted(good)
    assert {p: bytes(c) for p, c in zip(paths, index.packed_codes())} == codes


def test_a_pattern_that_matches_nothing_is_one_clear_line(exported, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoFilesMatchedError, match="no file matches"):
        encode_files([str(tmp_path / "empty" / "*.jpg")], exported, str(tmp_path / "o"))
    with pytest.raises(NoFilesMatchedError, match="is a directory"):
        encode_files([str(tmp_path / "empty")], exported, str(tmp_path / "o"))
    out = run_cli_in_process(
        ["beam-encode", "--input", tmp_path / "empty" / "*.jpg", "--model", exported, "--output", tmp_path / "o"]
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"coophash beam-encode: error: no file matches {tmp_path / 'empty' / '*.jpg'}"
    assert not glob.glob(str(tmp_path / "o*"))
    out = run_cli_in_process(["beam-encode", "--input", "x", "--model", tmp_path, "--output", tmp_path / "o"])
    assert out.returncode == 2 and "is not a coophash export" in out.stderr and len(out.stderr.splitlines()) == 1


def test_only_beam_encode_passes_unknown_flags_on(exported, tmp_path):
    out = run_cli_in_process(["encode", "--run-dir", "x", "--direct_num_workers=2", "a.png"])
    assert out.returncode == 2 and "unrecognized arguments: --direct_num_workers=2" in out.stderr
    out = run_cli_in_process(
        ["beam-encode", "--input", tmp_path / "*.png", "--model", exported, "--output", tmp_path / "o", "--no_such=1"]
    )
    assert out.returncode == 2 and "no file matches" in out.stderr  # got past argparse to the pattern check


def test_beam_module_imports_no_training_code(exported):
    code = f"""
import sys, json
import tensorflow as tf
from coophash_keras.beam import HashImageBytesHandler
handler = HashImageBytesHandler({exported!r})
png = tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)).numpy()
assert len(handler.run_inference([png], handler.load_model())[0].inference) == 2
print(json.dumps(sorted(m for m in sys.modules if m.startswith("coophash_keras"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    for training in (
        "coophash_keras.models",
        "coophash_keras.baselines",
        "coophash_keras.losses",
        "coophash_keras.runs",
    ):
        assert not [m for m in modules if m.startswith(training)], modules
