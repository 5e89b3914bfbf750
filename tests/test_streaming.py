"""The one streamed data path (ImageSet rows that are files, decoded in the pipeline) against the
in-memory path on the same pixels, bit for bit; bad files mid-stream; `index build` in resumable
chunks, `index add` / `remove`, `encode --out` codes files and `index build --from-shards`."""

import os

import numpy as np
import pytest
from conftest import run_cli_in_process
from PIL import Image

from coophash_keras.data import ImageSet, load_dataset
from coophash_keras.data.files import decode_image


def _cli(*args):
    return run_cli_in_process([str(a) for a in args])


def _write_digits(root, digits, count, classes=False):
    """The first `count` digits as 8x8 greyscale PNGs (in class folders when `classes`)."""
    for i in range(count):
        sub = os.path.join(root, f"c{int(digits.labels[i])}") if classes else os.path.join(root, f"p{i // 100:02d}")
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(digits.images[i, ..., 0]).save(os.path.join(sub, f"{i:05d}.png"))
    return str(root)


def _in_memory(data):
    """The old path: every file decoded up front by the same decode_image, held as an array."""
    h, w, c = data.image_shape
    images = np.stack([decode_image(p, (h, w), c) for p in data.extras["paths"]])
    return ImageSet(images, data.labels, data.num_classes, data.multi_label, data.class_names, data.name, data.extras)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(model, model.keras path): an untrained 16-bit CoopHash on 8x8x1 (random weights give
    codes as good as any for equality)."""
    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.io import save_model

    cfg = CoopHashConfig(
        image_shape=(8, 8, 1), num_classes=10, num_bits=16, base_filters=8, feature_dim=32, latent_dim=8
    )
    model = CoopHash(cfg)
    model.encode(np.zeros((1, 8, 8, 1), np.uint8))
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    save_model(model, path)
    return model, path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, digits):
    return _write_digits(tmp_path_factory.mktemp("photos") / "p", digits, 600)


def test_file_rows_decode_in_the_pipeline_to_the_in_memory_pixels(photo_folder):
    data = load_dataset(f"images:{photo_folder}", image_size=(8, 8), channels=1)
    assert data.streamed and data.images is None and data.image_shape == (8, 8, 1) and len(data) == 600
    np.testing.assert_array_equal(data.pixels(), _in_memory(data).images)
    rows = np.array([599, 3, 256])
    np.testing.assert_array_equal(data.pixels(rows), _in_memory(data).images[rows])


def test_streamed_codes_equal_the_in_memory_codes_bit_for_bit(photo_folder, tiny_model):
    from coophash_keras.encoding import encode_set

    model, _ = tiny_model
    data = load_dataset(f"images:{photo_folder}", image_size=(8, 8), channels=1)
    old = model.encode(_in_memory(data).images)  # what the commands ran before: one array, batches of 256
    codes, rows = encode_set(model, data)
    assert rows.tolist() == list(range(600))
    np.testing.assert_array_equal(codes, old)
    packed, _ = encode_set(model, _in_memory(data), packed=True)
    np.testing.assert_array_equal(packed, np.packbits(old > 0, axis=1))


def test_training_batches_and_evaluation_match_the_in_memory_set(tmp_path, digits, tiny_model):
    """The labelled set streamed gives the same shuffled training batches (so the same training)
    and the same retrieval metrics as the in-memory set of the same pixels."""
    from coophash_keras.data import retrieval_split
    from coophash_keras.metrics import retrieval_metrics

    root = _write_digits(tmp_path / "classes", digits, 300, classes=True)
    data = load_dataset(f"folder:{root}", image_size=(8, 8), channels=1)
    old = _in_memory(data)
    for a, b in zip(
        data.as_dataset(32, shuffle=True, seed=3).take(3), old.as_dataset(32, shuffle=True, seed=3).take(3)
    ):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())

    from coophash_keras.callbacks import _encoded

    model, _ = tiny_model
    split = retrieval_split(data.labels, 3, seed=0)
    q, ql = _encoded(model, data.subset(split.query), data.labels[split.query])
    db, dbl = _encoded(model, data.subset(split.database), data.labels[split.database])
    streamed = retrieval_metrics(q, ql, db, dbl, topk=(10,))
    q_old, db_old = model.encode(old.images[split.query]), model.encode(old.images[split.database])
    before = retrieval_metrics(q_old, old.labels[split.query], db_old, old.labels[split.database], topk=(10,))
    assert streamed.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(streamed[key], before[key])


def test_itq_and_lsh_fit_in_one_streamed_pass_the_same_from_files_as_from_arrays(photo_folder, digits):
    from coophash_keras.baselines.label_free import FeatureStatistics
    from coophash_keras.config import CoopHashConfig
    from coophash_keras.registry import model_class

    data = load_dataset(f"images:{photo_folder}", image_size=(8, 8), channels=1)
    old = _in_memory(data)
    for name in ("itq", "lsh"):
        fitted = []
        for part in (data, old):
            model = model_class(name)(CoopHashConfig(image_shape=(8, 8, 1), num_classes=10, num_bits=16))
            model.compile()
            model.fit(part.image_batches(256))
            fitted.append([np.asarray(w) for w in model.hash_network.weights])
        for a, b in zip(*fitted):
            np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(2.0, 1.0, (700, 5))  # accumulated moments = the direct ones
    stats = FeatureStatistics(5, keep=100)
    for i in range(0, 700, 256):
        stats.add(x[i : i + 256])
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(x.T, bias=True), rtol=1e-9, atol=1e-12)
    assert stats.sample.shape == (100, 5) and stats.n == 700


def test_a_set_beyond_the_old_4_gib_refusal_loads_as_rows(photo_folder):
    data = load_dataset(f"images:{photo_folder}", image_size=(20000, 20000), channels=3)  # 720 GB of pixels
    assert len(data) == 600 and data.image_shape == (20000, 20000, 3)


def _bad_folder(root, digits):
    _write_digits(root, digits, 20)
    (root / "p00" / "garbage.png").write_bytes(b"not an image at all")
    (root / "p00" / "empty.jpg").write_bytes(b"")
    full = root / "full.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(full)
    raw = full.read_bytes()
    (root / "p00" / "cut.png").write_bytes(raw[: len(raw) // 2])
    full.unlink()
    return str(root)


def test_bad_files_mid_stream_are_skipped_named_once_and_counted(tmp_path, digits, tiny_model):
    _, model_path = tiny_model
    root = _bad_folder(tmp_path / "bad", digits)
    out = tmp_path / "db.idx"
    result = _cli("index", "build", "--model", model_path, "--dataset", f"images:{root}", "--out", out)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    for name, reason in (
        ("garbage.png", "unrecognised image data"),
        ("empty.jpg", "empty file"),
        ("cut.png", "truncated"),
    ):
        assert sum(name in line for line in lines) == 1 and any(f"{name} ({reason})" in line for line in lines)
    assert lines[-1].endswith("skipped 3 of 23 files that could not be decoded") and len(lines) == 4
    assert "indexed 20 codes" in result.stdout
    from coophash_keras.index import HammingIndex

    index = HammingIndex.load(str(out))
    assert not any("garbage" in p or "cut" in p for p in index.paths_for(index.ids).tolist())


def test_a_folder_without_images_is_one_line_exit_2(tmp_path, tiny_model):
    (tmp_path / "empty").mkdir()
    result = _cli(
        "index",
        "build",
        "--model",
        tiny_model[1],
        "--dataset",
        f"images:{tmp_path / 'empty'}",
        "--out",
        tmp_path / "x.idx",
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "no images" in result.stderr


def test_a_build_killed_after_any_chunk_resumes_to_the_same_index(tmp_path, photo_folder, tiny_model):
    from coophash_keras.index import building
    from coophash_keras.index.building import encode_in_chunks
    from coophash_keras.io import model_fingerprint

    model, model_path = tiny_model
    data = load_dataset(f"images:{photo_folder}", image_size=(8, 8), channels=1)
    version = model_fingerprint(model_path)
    whole = encode_in_chunks(model, version, data, str(tmp_path / "a.partial"), chunk_rows=256)

    class Killed(Exception):
        pass

    def kill_after(k):
        def hook(chunk):
            if chunk == k:
                raise Killed

        return hook

    work = str(tmp_path / "b.partial")
    for k in (0, 1):  # killed after chunk 0, then (resumed) after chunk 1
        with pytest.raises(Killed):
            encode_in_chunks(model, version, data, work, chunk_rows=256, after_chunk=kill_after(k))
    encoded = []
    resumed = encode_in_chunks(model, version, data, work, chunk_rows=256, after_chunk=encoded.append)
    assert encoded == [2]  # only the missing chunk was encoded again
    np.testing.assert_array_equal(resumed[0], whole[0])
    np.testing.assert_array_equal(resumed[1], whole[1])
    building.finish(work)
    assert not os.path.exists(work)


def test_index_build_add_remove_and_a_mismatched_model(tmp_path, digits, tiny_model):
    from coophash_keras import CoopHash
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import save_model

    model, model_path = tiny_model
    root = _write_digits(tmp_path / "photos", digits, 150)
    whole = tmp_path / "whole.idx"
    assert _cli("index", "build", "--model", model_path, "--dataset", f"images:{root}", "--out", whole).returncode == 0
    # a first half indexed, then the whole folder added: only the rest is encoded
    half = sorted(os.path.join(root, "p00", f) for f in os.listdir(os.path.join(root, "p00")))
    grown = tmp_path / "grown.idx"
    assert _cli("index", "build", "--model", model_path, "--images", *half, "--out", grown).returncode == 0
    result = _cli("index", "add", "--index", grown, "--model", model_path, "--dataset", f"images:{root}")
    assert result.returncode == 0, result.stderr
    assert "added 50 codes, skipped 100 paths already in the index" in result.stdout
    a, b = HammingIndex.load(str(whole)), HammingIndex.load(str(grown))
    assert b.paths_for(b.ids).tolist() == a.paths_for(a.ids).tolist()
    np.testing.assert_array_equal(b.packed_codes(), a.packed_codes())

    other = CoopHash(model.config)
    other.encode(np.zeros((1, 8, 8, 1), np.uint8))
    other_path = str(tmp_path / "other.keras")
    save_model(other, other_path)
    before = grown.read_bytes()
    result = _cli("index", "add", "--index", grown, "--model", other_path, half[0])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "unchanged" in result.stderr
    assert grown.read_bytes() == before

    result = _cli("index", "remove", "--index", grown, "--paths", half[0], "--ids", "149")
    assert result.returncode == 0 and "removed 2 codes" in result.stdout
    c = HammingIndex.load(str(grown))
    assert len(c) == 148 and half[0] not in c.paths_for(c.ids).tolist() and 149 not in c.ids.tolist()


def test_encode_out_writes_a_parquet_codes_file_that_index_build_reads(tmp_path, photo_folder, tiny_model):
    import pyarrow.parquet as pq

    from coophash_keras.code_files import read_codes
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import model_fingerprint

    model, model_path = tiny_model
    out = tmp_path / "codes.parquet"
    result = _cli("encode", "--run-dir", model_path, "--dataset", f"images:{photo_folder}", "--out", out)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta == {
        "coophash.format": "codes-1",
        "coophash.num_bits": "16",
        "coophash.model_version": model_fingerprint(model_path),
    }
    assert str(table.schema.field("code").type) == "fixed_size_binary[2]" and table.num_rows == 600
    data = load_dataset(f"images:{photo_folder}", image_size=(8, 8), channels=1)
    assert table.column("path").to_pylist() == data.extras["paths"].tolist()
    expected = model.encode(_in_memory(data).images, packed=True)
    codes = np.frombuffer(b"".join(table.column("code").to_pylist()), np.uint8).reshape(600, 2)
    np.testing.assert_array_equal(codes, expected)

    # two shards (the second the first's copy under another name) -> one index, sorted file then row order
    shard2 = tmp_path / "codes2.parquet"
    shard2.write_bytes(out.read_bytes())
    idx = tmp_path / "shards.idx"
    result = _cli("index", "build", "--from-shards", str(tmp_path / "codes*.parquet"), "--out", idx)
    assert result.returncode == 0, result.stderr
    index = HammingIndex.load(str(idx))
    assert len(index) == 1200 and index.model_version == model_fingerprint(model_path)
    np.testing.assert_array_equal(index.packed_codes(), np.concatenate([expected, expected]))
    assert read_codes(str(out)).num_rows == 600
    result = _cli("index", "build", "--from-shards", str(tmp_path / "none*.parquet"), "--out", tmp_path / "n.idx")
    assert result.returncode == 2 and "no codes files match" in result.stderr
