"""An unlabelled pool given apart (`coophash train --unlabeled DATASET`, RunSpec.unlabeled), streamed
from its files; and `evaluate` with extra database sets and queries from a labelled data set."""

import json
import os

import numpy as np
import pytest
from conftest import run_cli_in_process as cli


def _write_pngs(digits, indices, folder, by_class):
    from PIL import Image

    for i in indices:
        sub = os.path.join(folder, f"c{digits.labels[i]}") if by_class else folder
        os.makedirs(sub, exist_ok=True)
        Image.fromarray(digits.images[i][..., 0]).save(os.path.join(sub, f"{i:04d}.png"))


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    """A labelled folder of 12 digits per class and an images: pool of 150 other digits (8x8 PNGs)."""
    root = tmp_path_factory.mktemp("pool_files")
    labelled = np.concatenate([np.flatnonzero(digits.labels == k)[:12] for k in range(10)])
    rest = np.setdiff1d(np.arange(len(digits)), labelled)[:150]
    _write_pngs(digits, labelled, str(root / "labelled"), by_class=True)
    _write_pngs(digits, rest, str(root / "pool"), by_class=False)
    return root


TRAIN = ["train", "--bits", "16", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "16"]
TRAIN += ["--query-per-class", "2", "--set", "base_filters=4", "--set", "feature_dim=16", "--progress", "none"]


def test_pool_is_streamed_recorded_and_replaces_the_split_pool(files, tmp_path):
    run = tmp_path / "run"
    r = cli(
        [*TRAIN, "--dataset", f"folder:{files}/labelled", "--labels-per-class", "5"]
        + ["--method", "code_classifier:fixmatch", "--unlabeled", f"images:{files}/pool", "--run-dir", run]
    )
    assert r.returncode == 0, r.stderr
    assert "unlabelled pool: images:" in r.stdout and "150 images, streamed from its files" in r.stdout
    assert "replaces the 50 images --labels-per-class left over" in r.stdout
    record = json.load(open(run / "run.json"))
    assert record["unlabeled"] == f"images:{files}/pool"
    pool = record["unlabeled_data"]
    assert pool["num_images"] == 150 and pool["streamed"] and pool["image_size"] == [8, 8] and pool["channels"] == 1
    assert len(pool["fingerprint"]) == 16


def test_a_pool_is_decoded_in_the_pipeline_not_up_front(files, monkeypatch):
    import coophash_keras.data.files as files_module
    import coophash_keras.data.pool as pool_module

    decoded = []
    real = files_module.decode_image
    monkeypatch.setattr(files_module, "decode_image", lambda *a: decoded.append(a[0]) or real(*a))
    pool = pool_module.load_pool(f"images:{files}/pool", (8, 8, 1))
    assert len(pool) == 150 and decoded == []  # listed and probed, nothing decoded
    batch = next(iter(pool.dataset(4, seed=0)))
    assert batch.shape == (4, 8, 8, 1) and batch.dtype.name == "uint8"
    assert 4 <= len(decoded) < 150  # a few batches ahead at most, never the whole pool
    first = [os.path.basename(p) for p in decoded[:4]]
    assert first != sorted(first) or first[0] != "0000.png"  # shuffled file names


def test_a_file_that_fails_to_decode_is_skipped_with_one_warning_line(files, tmp_path):
    from coophash_keras.data.pool import load_pool

    folder = tmp_path / "pool"
    folder.mkdir()
    for name in sorted(os.listdir(f"{files}/pool"))[:6]:
        (folder / name).write_bytes(open(f"{files}/pool/{name}", "rb").read())
    (folder / "junk.png").write_bytes(b"not an image")  # fails its header: skipped when listed
    lines = []
    pool = load_pool(f"images:{folder}", (8, 8, 1), warn=lines.append)
    assert len(pool) == 6 and len(lines) == 1 and "junk.png (unrecognised image data)" in lines[0]
    first = sorted(n for n in os.listdir(folder) if n != "junk.png")[0]
    good = (folder / first).read_bytes()
    (folder / first).write_bytes(good[: len(good) // 2])  # a header, then truncated: fails only in decoding
    lines.clear()
    seen = [b for b in pool.dataset(1, seed=0, shuffle=False, repeat=False)]
    assert len(seen) == 5 and len(lines) == 1 and first in lines[0]


@pytest.mark.parametrize(
    "pool, method, expected",
    [
        ("empty", "code_classifier:fixmatch", "the pool is empty"),
        ("unreadable", "code_classifier:fixmatch", "no readable images"),
        ("good", "orthohash", "does not use an unlabelled pool"),
    ],
)
def test_bad_pools_are_one_line_exit_2_and_write_nothing(files, tmp_path, pool, method, expected):
    folder = tmp_path / pool
    folder.mkdir()
    if pool == "unreadable":
        (folder / "a.png").write_bytes(b"")
        (folder / "b.jpg").write_bytes(b"garbage")
    path = f"{files}/pool" if pool == "good" else folder
    run = tmp_path / "run"
    r = cli(
        [*TRAIN, "--dataset", f"folder:{files}/labelled", "--labels-per-class", "5"]
        + ["--method", method, "--unlabeled", f"images:{path}", "--run-dir", run]
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and expected in errors[0] and errors[0].startswith("coophash train: error:")
    assert not run.exists()


def test_a_pool_that_holds_query_or_database_images_gets_a_warning(files, digits):
    from coophash_keras.data import load_dataset, retrieval_split
    from coophash_keras.run_data import _load_pool
    from coophash_keras.runs import RunSpec

    data = load_dataset(f"folder:{files}/labelled")
    split = retrieval_split(data.labels, 2, 5, seed=0)
    spec = RunSpec(run_dir="unused", method="code_classifier:fixmatch", unlabeled=f"images:{files}/labelled")
    lines = []
    from coophash_keras.registry import model_class

    config = model_class("code_classifier")(None).config.replace(image_shape=(8, 8, 1), pseudo_label_weight=1.0)
    config = config.replace(batch_size=16)
    _load_pool(spec, model_class("code_classifier"), config, data, split, warn=lines.append)
    assert len(lines) == 1 and "120 of its 120 images are also query or database images" in lines[0]


def test_a_backup_made_with_another_pool_is_refused(tmp_path):
    from coophash_keras.callbacks import check_backup_dir
    from coophash_keras.registry import model_class

    model = model_class("lsh")({"image_shape": (8, 8, 1), "num_classes": 10, "num_bits": 8})
    check_backup_dir(str(tmp_path), model, {"unlabeled_data": {"dataset": "images:p", "fingerprint": "aa"}})
    check_backup_dir(str(tmp_path), model, {"unlabeled_data": {"dataset": "images:p", "fingerprint": "aa"}})
    with pytest.raises(ValueError, match="unlabeled_data"):
        check_backup_dir(str(tmp_path), model, {"unlabeled_data": {"dataset": "images:p", "fingerprint": "bb"}})


def test_label_free_run_on_images_evaluates_on_labelled_queries_and_an_unlabelled_database(files, tmp_path):
    """itq fitted on an images: folder; `evaluate` needs labelled queries; an unlabelled database part
    counts as never relevant (checked against retrieval_metrics with label -1 spelled out)."""
    import keras

    from coophash_keras.data import load_dataset
    from coophash_keras.metrics import retrieval_metrics

    run = tmp_path / "itq"
    r = cli(["train", "--dataset", f"images:{files}/pool", "--model", "itq", "--bits", "8", "--run-dir", run])
    assert r.returncode == 0, r.stderr
    assert "closed form" in r.stdout
    r = cli(["evaluate", "--run-dir", run])
    assert r.returncode == 2 and "--queries" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli(
        ["evaluate", "--run-dir", run, "--queries", f"folder:{files}/labelled", "--query-per-class", "2"]
        + ["--database", f"images:{files}/pool"]
    )
    assert r.returncode == 0, r.stderr
    metrics = json.load(open(run / "metrics.json"))
    assert metrics["num_query"] == 20 and metrics["num_database"] == 100 + 150
    assert metrics["num_database_unlabelled"] == 150
    model = keras.models.load_model(str(run / "model.keras"))
    labelled, pool = load_dataset(f"folder:{files}/labelled"), load_dataset(f"images:{files}/pool")
    from coophash_keras.data import retrieval_split

    s = retrieval_split(labelled.labels, 2, seed=0)
    expected = retrieval_metrics(
        model.encode(labelled.pixels(s.query)),
        labelled.labels[s.query],
        np.concatenate([model.encode(labelled.pixels(s.database)), model.encode(pool.pixels())]),
        np.concatenate([labelled.labels[s.database], np.full(150, -1)]),
        topk=(100, 1000),
    )
    assert metrics["mAP@all"] == pytest.approx(expected["mAP@all"])
    assert (
        metrics["mAP@all"]
        < retrieval_metrics(
            model.encode(labelled.pixels(s.query)),
            labelled.labels[s.query],
            model.encode(labelled.pixels(s.database)),
            labelled.labels[s.database],
        )["mAP@all"]
    )  # the pool's images only push relevant ones down


def test_tune_takes_the_pool_too(files, tmp_path):
    """`coophash tune` has the same --unlabeled, checked the same way (a tuning run writes nothing first)."""
    r = cli(
        [
            "tune",
            "--dataset",
            f"folder:{files}/labelled",
            "--method",
            "orthohash",
            "--trials",
            "1",
            "--query-per-class",
            "2",
        ]
        + ["--unlabeled", f"images:{files}/pool", "--run-dir", tmp_path / "tune", "--progress", "none"]
    )
    assert r.returncode == 2 and "orthohash does not use an unlabelled pool" in r.stderr
    assert not (tmp_path / "tune").exists()
