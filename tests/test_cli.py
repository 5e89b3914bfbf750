import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, run_cli_in_process
from PIL import Image

SMALL = [
    "--set",
    "base_filters=8",
    "--set",
    "feature_dim=32",
    "--set",
    "latent_dim=8",
    "--set",
    "generator_filters=16",
    "--set",
    "langevin_steps=2",
]


def coophash(*args, check=True, entry_point=False):
    """`coophash ARGS`: in this process by default (conftest.run_cli_in_process), or with
    entry_point=True as `python -m coophash_keras.cli` in a fresh process, for the tests of what
    only a real process shows (the console entry point, a clean interpreter, exit codes)."""
    if entry_point:
        out = subprocess.run(
            [sys.executable, "-m", "coophash_keras.cli", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    else:
        out = run_cli_in_process(args)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    coophash(
        "train",
        "--dataset",
        "digits",
        "--bits",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--query-per-class",
        "5",
        "--labels-per-class",
        "10",
        "--run-dir",
        str(d),
        "--progress",
        "none",
        *SMALL,
    )
    return d


def test_train_writes_a_run_dir(run_dir):
    for name in ("model.keras", "config.json", "split.npz", "history.json", "run.json"):
        assert (run_dir / name).exists(), name
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["num_bits"] == 16 and cfg["base_filters"] == 8
    split = np.load(run_dir / "split.npz")
    assert len(split["query"]) == 50 and len(split["train"]) == 100


def test_evaluate_writes_metrics(run_dir):
    out = coophash("evaluate", "--run-dir", str(run_dir), "--topk", "10")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["mAP@all"] <= 1 and "mAP@10" in metrics and "P@r2" in metrics
    assert metrics["num_query"] == 50 and metrics["num_database"] == 1797 - 50
    assert len(metrics["pr_curve"]["precision"]) == 17
    assert "mAP@all" in out.stdout


def test_encode_png_and_npy(run_dir, tmp_path):
    png = tmp_path / "digit.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(png)
    npy = tmp_path / "digits.npy"
    np.save(npy, np.zeros((3, 8, 8, 1), np.uint8))
    out = coophash("encode", "--run-dir", str(run_dir), str(png), str(npy), "--output", str(tmp_path / "c.npy"))
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == (4, 16) and set(np.unique(codes)) <= {-1, 1}
    line = out.stdout.strip().splitlines()[-4]
    assert line.startswith(str(png)) and len(line.split("\t")[1]) == 16
    packed = coophash("encode", "--run-dir", str(run_dir), str(png), "--packed")
    assert len(packed.stdout.strip().split("\t")[-1]) == 4  # 2 bytes as hex


@pytest.mark.parametrize(
    "args,match",
    [
        (["train", "--bits", "12", "--run-dir", "x"], "multiple of 8"),
        (["train", "--dataset", "nope", "--run-dir", "x"], "unknown dataset"),
        (["train", "--dataset", "fashion_mnist", "--data-dir", "/nonexistent", "--run-dir", "x"], "missing data file"),
        (["train", "--set", "langevin_stepz=1", "--run-dir", "x"], "Unknown CoopHashConfig field"),
        (["train", "--set", "langevin_steps=abc", "--run-dir", "x"], "langevin_steps must be int, got 'abc' (str)"),
        (["train", "--epochs", "0", "--run-dir", "x"], "argument --epochs: expected an integer > 0, got '0'"),
        (
            ["train", "--labels-per-class", "-3", "--run-dir", "x"],
            "argument --labels-per-class: expected an integer > 0, got '-3'",
        ),
        (["evaluate", "--run-dir", "/nonexistent"], "not a run directory"),
        (["encode", "--run-dir", "/nonexistent", "a.png"], "no model file"),
    ],
)
def test_cli_errors_are_one_clear_line(args, match):
    out = coophash(*args, check=False, entry_point=args[0] == "evaluate")  # one case through a real process
    assert out.returncode == 2
    assert match in out.stderr and "Traceback" not in out.stderr


def test_train_rejects_a_stray_npz_label_instead_of_making_more_classes(tmp_path):
    from coophash_keras.data import load_digits

    digits = load_digits()
    labels = digits.labels.copy()
    labels[5] = 99
    np.savez(tmp_path / "d.npz", images=digits.images, labels=labels)
    args = ["train", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--query-per-class", "0", "--run-dir", str(tmp_path)]
    out = coophash(*args, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "label 99 out of range" in out.stderr and "no image has class 10-98" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_train_divergence_is_one_line_and_exit_2(tmp_path):
    explode = ["langevin_step_size=1e6", "langevin_clip_update=null", "langevin_clip_images=false"]
    explode += ["langevin_noise_scale=1e6"]
    args = ["train", "--bits", "16", "--epochs", "1", "--labels-per-class", "10", "--batch-size", "32"]
    args += ["--run-dir", str(tmp_path), "--progress", "none", *SMALL, *[a for kv in explode for a in ("--set", kv)]]
    out = coophash(*args, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith("coophash train: error: training diverged at batch ")
    assert "divergence_policy=shrink" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model.keras").exists()


def test_encode_rejects_missing_and_bad_images(run_dir, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no image here")
    out = coophash("encode", "--run-dir", str(run_dir), str(bad), check=False)
    assert out.returncode == 2 and "not a readable image" in out.stderr
    out = coophash("encode", "--run-dir", str(run_dir), str(tmp_path / "none.png"), check=False)
    assert out.returncode == 2 and "missing image file" in out.stderr


def test_index_build_and_search(run_dir, tmp_path):
    out_path = tmp_path / "db.idx"
    coophash(
        "index", "build", "--model", str(run_dir), "--dataset", "digits", "--split", "database", "--out", str(out_path)
    )
    from coophash_keras.index import HammingIndex

    index = HammingIndex.load(str(out_path))
    assert len(index) == 1797 - 50 and index.num_bits == 16 and len(index.model_version) == 16
    again = coophash("index", "build", "--model", str(run_dir), "--out", str(out_path), check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # an existing index is not clobbered
    png = tmp_path / "q.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    out = coophash("index", "search", "--index", str(out_path), "--model", str(run_dir), "--k", "3", str(png))
    assert "ids=[" in out.stdout and "distances=[" in out.stdout
    bad = coophash(
        "index", "search", "--index", str(out_path), "--model", str(run_dir), "--k", "0", str(png), check=False
    )
    assert bad.returncode == 2 and "--k: expected an integer > 0" in bad.stderr
    # image files: their paths are stored and come back with the neighbours
    files = []
    for i in range(3):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(files[-1])
    by_files = tmp_path / "files.idx"
    coophash("index", "build", "--model", str(run_dir), "--images", *map(str, files), "--out", str(by_files))
    out = coophash(
        "index", "search", "--index", str(by_files), "--model", str(run_dir), "--k", "3", "--no-verify", str(files[2])
    )
    ids = json.loads(out.stdout.split("ids=")[1].split("\t")[0])
    paths = out.stdout.split("paths=")[1].strip()
    assert paths == str([str(files[i]) for i in ids]), out.stdout  # file i has id i


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    """The README's first command, short: train, evaluate, export, serve, answer a REST query."""
    out = coophash("demo", "--run-dir", str(tmp_path / "demo"), "--epochs", "1", entry_point=True)
    assert "served query: top-5 neighbours" in out.stdout and "demo done" in out.stdout
    assert (tmp_path / "demo" / "models" / "coophash" / "1" / "saved_model.pb").exists()
    assert json.loads((tmp_path / "demo" / "metrics.json").read_text())["num_bits"] == 32


@pytest.mark.slow
def test_train_baselines_and_ablations_from_the_cli(tmp_path):
    common = [
        "--dataset",
        "digits",
        "--bits",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--query-per-class",
        "5",
        "--labels-per-class",
        "10",
        "--progress",
        "none",
        *SMALL,
    ]
    d = tmp_path / "dshgan"
    out = coophash("train", "--model", "dshgan", "--run-dir", str(d), *common)
    assert "training DSHGAN" in out.stdout
    coophash("evaluate", "--run-dir", str(d), "--topk", "10")
    assert 0 <= json.loads((d / "metrics.json").read_text())["mAP@all"] <= 1
    coophash("export", "--model", str(d / "model.keras"), "--base", str(tmp_path / "serving"), "--name", "dshgan")
    assert (tmp_path / "serving" / "dshgan" / "1" / "saved_model.pb").exists()
    a = tmp_path / "ablation"
    coophash("train", "--ablation", "no_inference_head", "--run-dir", str(a), *common)
    assert json.loads((a / "config.json").read_text())["generator_latent"] == "prior"
    bad = coophash(
        "train",
        "--model",
        "triplet",
        "--ablation",
        "no_energy_head",
        "--run-dir",
        str(tmp_path / "x"),
        *common,
        check=False,
    )
    assert bad.returncode == 2 and "--ablation applies to --model coophash only" in bad.stderr


def test_val_every_logs_real_validations_only_and_train_takes_a_config_file(tmp_path):
    import json as _json

    config = tmp_path / "best_config.json"
    config.write_text(
        _json.dumps(
            {
                "langevin_steps": 3,
                "base_filters": 8,
                "feature_dim": 32,
                "latent_dim": 8,
                "generator_filters": 16,
                "num_classes": 99,
            }
        )
    )  # shapes come from the data
    run = tmp_path / "run"
    coophash(
        "train",
        "--dataset",
        "digits",
        "--bits",
        "16",
        "--epochs",
        "3",
        "--val-every",
        "2",
        "--labels-per-class",
        "10",
        "--batch-size",
        "32",
        "--run-dir",
        str(run),
        "--config",
        str(config),
        "--progress",
        "none",
    )
    cfg = _json.loads((run / "config.json").read_text())
    assert cfg["langevin_steps"] == 3 and cfg["num_classes"] == 10
    history = _json.loads((run / "history.json").read_text())
    assert all(len(values) == 3 for values in history.values())  # one entry per epoch for every metric
    assert history["val_map"][0] is None and all(0 <= v <= 1 for v in history["val_map"][1:])  # epochs 2 and 3
    first = _json.loads((run / "progress.jsonl").read_text().splitlines()[0])
    assert "val_map" not in first["logs"]
    assert (run / "best.keras").exists()
    bad = coophash("train", "--run-dir", str(tmp_path / "x"), "--config", str(tmp_path / "none.json"), check=False)
    assert bad.returncode == 2 and "missing config file" in bad.stderr


def test_a_fresh_process_loads_any_saved_model_after_importing_the_package(run_dir, tmp_path):
    from coophash_keras.baselines.csq import CSQ
    from coophash_keras.config import CoopHashConfig
    from coophash_keras.io import save_model

    csq = CSQ(CoopHashConfig(num_bits=16, base_filters=8, feature_dim=32))
    csq.compile()
    save_model(csq, str(tmp_path / "csq.keras"))
    code = (
        "import coophash_keras, keras\n"
        f"print(type(keras.models.load_model({str(run_dir / 'model.keras')!r})).__name__)\n"
        f"print(type(keras.models.load_model({str(tmp_path / 'csq.keras')!r})).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["CoopHash", "CSQ"]


def test_export_takes_a_run_directory(run_dir, tmp_path):
    out = coophash("export", "--model", str(run_dir), "--base", str(tmp_path / "models"))
    assert (tmp_path / "models" / "coophash" / "1" / "saved_model.pb").exists() and "exported" in out.stdout
    # the run's 50 held-out queries set in_distribution's threshold, at the default TPR
    info = json.load(open(tmp_path / "models" / "coophash" / "1" / "assets.extra" / "coophash.json"))["ood"]
    assert info["tpr"] == 0.95 and info["calibration_images"] == 50 and info["calibration_tpr"] >= 0.95
    assert "in_distribution = energy >=" in out.stdout
    out = coophash("export", "--model", str(run_dir), "--base", str(tmp_path / "models"), "--ood-tpr", "0.8")
    info = json.load(open(tmp_path / "models" / "coophash" / "2" / "assets.extra" / "coophash.json"))["ood"]
    assert info["tpr"] == 0.8 and info["calibration_tpr"] >= 0.8
    out = coophash("export", "--model", str(run_dir), "--base", str(tmp_path / "m"), "--ood-tpr", "1.5", check=False)
    assert out.returncode == 2 and "--ood-tpr" in out.stderr and "Traceback" not in out.stderr


def test_export_database_embeds_the_codes_of_the_runs_database_split(run_dir, tmp_path):
    # `--database` streams the split through the pipeline: the embedded rows are exactly the
    # split's database rows, with the codes the model gives them.
    import tensorflow as tf

    from coophash_keras.data import RetrievalSplit, load_dataset
    from coophash_keras.io import load_model

    out = coophash("export", "--model", str(run_dir), "--database", str(run_dir), "--base", str(tmp_path / "m"))
    assert "search" in out.stdout
    loaded = tf.saved_model.load(str(tmp_path / "m" / "coophash" / "1"))
    codes, ids = (v.numpy() for v in loaded.database)
    split = RetrievalSplit.load(str(run_dir / "split.npz"))
    np.testing.assert_array_equal(ids, split.database)
    images = load_dataset("digits").images[split.database]
    np.testing.assert_array_equal(codes, load_model(str(run_dir / "model.keras")).encode(images, packed=True))


@pytest.mark.slow
def test_an_unprepared_tfds_dataset_is_one_clear_line(tmp_path):
    out = coophash(
        "train", "--dataset", "tfds:mnist", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r"), check=False
    )
    assert out.returncode == 2 and "is not prepared" in out.stderr and "Traceback" not in out.stderr
