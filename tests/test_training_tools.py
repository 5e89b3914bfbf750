"""TensorBoard logs, keras-tuner, preemption-safe resume, multi-worker training, mixed precision."""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import REPO, run_cli_in_process

from coophash_keras import CoopHash
from coophash_keras.callbacks import CoopHashTensorBoard, RetrievalMetricsCallback

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
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
        acc = EventAccumulator(path, size_guidance={"tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["tensors"]:
            out[tag] = [e.tensor_proto for e in acc.Tensors(tag)]
    return out


def test_tensorboard_logs_every_quantity(tmp_path, tiny_config, digits):
    import tensorflow as tf

    model = CoopHash(tiny_config)
    model.compile()
    log_dir = str(tmp_path / "tb")
    q, db = digits.subset(np.arange(100)), digits.subset(np.arange(100, 600))
    callbacks = [
        RetrievalMetricsCallback(q.images, q.labels, db.images, db.labels, every_n_epochs=1, topk=(50,)),
        CoopHashTensorBoard(
            log_dir,
            q.images,
            q.labels,
            projector_images=db.images[:64],
            projector_labels=db.labels[:64],
            class_names=digits.class_names,
        ),
        keras.callbacks.TensorBoard(log_dir),
    ]
    model.fit(
        digits.subset(np.arange(600, 856)).as_dataset(32, drop_remainder=True), epochs=2, verbose=0, callbacks=callbacks
    )
    train = read_events(os.path.join(log_dir, "train"))
    for name in (
        "loss",
        "nll_loss",
        "classification_loss",
        "triplet_loss",
        "quantization_loss",
        "generator_loss",
        "reconstruction_loss",
        "kl_loss",
        "energy_real",
        "energy_revised",
        "langevin_grad_norm",
        "revision_distance",
        "energy_gap",
        "bit_balance",
        "bit_correlation",
    ):
        values = [float(tf.make_ndarray(t)) for t in train[f"epoch_{name}"]]
        assert len(values) == 2 and np.all(np.isfinite(values)), name
    val = read_events(os.path.join(log_dir, "validation"))
    maps = [float(tf.make_ndarray(t)) for t in val["epoch_map"]]
    assert len(maps) == 2 and all(0 <= m <= 1 for m in maps) and "epoch_map@50" in val
    extra = read_events(os.path.join(log_dir, "coophash"))
    steps = tiny_config.langevin_steps
    assert {
        "bits/balance",
        "bits/correlation",
        "hash/relaxed_codes",
        "pairs/generated_and_revised",
        "pairs/labels",
        *(f"langevin/distance_after_step_{t}" for t in range(1, steps + 1)),
        *(f"langevin/energy_gain_after_step_{t}" for t in range(1, steps + 1)),
    } <= set(extra)
    image = tf.io.decode_png(tf.make_ndarray(extra["pairs/generated_and_revised"][-1])[2]).numpy()
    # 8 pairs stacked, 4 columns each; 8x8 tiles upscaled 8x to 64x64, 2-pixel separators between them
    assert image.shape == (8 * 64 + 7 * 2, 4 * 64 + 3 * 2, 1)
    assert image[64, 0, 0] == 128 and image[0, 64, 0] == 128  # the separators
    hist = tf.make_ndarray(extra["hash/relaxed_codes"][-1])
    assert hist.ndim == 2 and np.all(np.isfinite(hist))
    # Langevin moves the pairs further with every step, and raises their energy
    distances = [float(tf.make_ndarray(extra[f"langevin/distance_after_step_{t}"][-1])) for t in range(1, steps + 1)]
    assert 0 < distances[0] < distances[-1]
    assert float(tf.make_ndarray(extra[f"langevin/energy_gain_after_step_{steps}"][-1])) > 0
    # projector files in the log_dir root, one metadata row per embedded code
    config = open(os.path.join(log_dir, "projector_config.pbtxt")).read()
    assert "metadata.tsv" in config and "sprite.png" in config
    assert len(open(os.path.join(log_dir, "metadata.tsv")).read().strip().splitlines()) == 64 + 1


@pytest.mark.slow
def test_keras_tuner_two_trials_report_validation_map(tmp_path, tiny_config, digits):
    from coophash_keras import CoopHash
    from coophash_keras.tuning import make_tuner

    tuner = make_tuner(
        CoopHash, tiny_config, str(tmp_path), max_trials=2, tune=["langevin_steps", "triplet_margin"], seed=1
    )
    q, db = digits.subset(np.arange(100)), digits.subset(np.arange(100, 600))
    tuner.search(
        digits.subset(np.arange(600, 856)).as_dataset(32, drop_remainder=True),
        epochs=1,
        verbose=0,
        callbacks=[RetrievalMetricsCallback(q.images, q.labels, db.images, db.labels)],
    )
    trials = tuner.oracle.trials
    assert len(trials) == 2
    scores = [t.score for t in trials.values()]
    assert all(s is not None and 0 <= s <= 1 for s in scores)
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.score == max(scores) and "langevin_steps" in best.hyperparameters.values


def _tune(run_dir, *extra):
    # 2 epochs: the objective must be reported on every epoch, not only the last. 20 labelled images
    # per class (2 steps an epoch at batch 64, not 20): the summary, not the training, is under test.
    args = ["tune", "--trials", "2", "--epochs", "2", "--bits", "16", "--tune", "langevin_steps,kl_weight", *extra]
    args += ["--labels-per-class", "20"]
    out = run_cli_in_process([*args, "--run-dir", run_dir, *SMALL])
    assert out.returncode == 0, out.stderr[-3000:]
    return out, json.load(open(run_dir / "tuning.json"))


@pytest.mark.slow
def test_coophash_tune_cli_reports_every_trial_and_repeats_with_the_same_seed(tmp_path):
    out, summary = _tune(tmp_path / "a")
    assert len(summary["trials"]) == 2 and 0 <= summary["best_val_map"] <= 1
    assert set(summary["best_hyperparameters"]) == {"langevin_steps", "kl_weight"}
    assert all(set(t["hyperparameters"]) == {"langevin_steps", "kl_weight"} for t in summary["trials"])
    assert all({"val_map", "revision_distance", "loss"} <= set(t["last_logs"]) for t in summary["trials"])
    assert all(t["last_logs"]["val_map"] <= t["score"] for t in summary["trials"])  # the score: the best epoch
    assert max(t["score"] for t in summary["trials"]) == summary["best_val_map"]
    assert out.stdout.count("val_map") >= 3  # one line per trial, then the best
    best_config = json.load(open(tmp_path / "a" / "best_config.json"))
    assert best_config["langevin_steps"] == summary["best_hyperparameters"]["langevin_steps"]
    # same default seed 0: the same hyper-parameters, trial by trial (epochs of a fixed length this time),
    # here around a named variant rather than the default configuration
    _, again = _tune(tmp_path / "b", "--steps-per-epoch", "3", "--method", "coophash:codes")
    assert [t["hyperparameters"] for t in again["trials"]] == [t["hyperparameters"] for t in summary["trials"]]
    assert (summary["steps_per_epoch"], again["steps_per_epoch"], again["epochs"]) == (None, 3, 2)
    assert (summary["method"], again["method"]) == ("coophash", "coophash:codes")
    assert best_config["classifier_input"] == "features"
    assert json.load(open(tmp_path / "b" / "best_config.json"))["classifier_input"] == "codes"


def train_cmd(run_dir, backup_dir, epochs, extra=()):
    """The training command line as a subprocess (the one to kill)."""
    return [sys.executable, "-m", "coophash_keras.cli", *train_args(run_dir, backup_dir, epochs, extra)]


LABELS_PER_CLASS = 40


def train_args(run_dir, backup_dir, epochs, extra=()):
    return [
        "train",
        "--epochs",
        str(epochs),
        "--bits",
        "16",
        "--batch-size",
        "64",
        "--labels-per-class",  # 400 training images, 6 steps an epoch: what is checked is the resume
        str(LABELS_PER_CLASS),
        "--run-dir",
        str(run_dir),
        "--backup-dir",
        str(backup_dir),
        "--progress",
        "none",
        *SMALL,
        *extra,
    ]


def progress(run_dir):
    path = os.path.join(run_dir, "progress.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def train_then_sigkill(run_dir, backup, epochs, after_epochs, after_backups=0):
    """Start a training subprocess and SIGKILL it once `after_epochs` epochs are logged and
    `after_backups` epoch checkpoints are complete in `backup` (the progress line is written
    before the epoch's backup, so waiting on progress alone may kill before any backup exists)."""
    proc = subprocess.Popen(
        train_cmd(run_dir, backup, epochs), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300

    def reached():
        backups = [d for d in backup.glob("epoch-*") if (d / "state.json").exists()]
        return len(progress(run_dir)) >= after_epochs and len(backups) >= after_backups

    while not reached() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return progress(run_dir)


@pytest.mark.slow
def test_sigkill_then_resume_continues_with_both_optimizers(tmp_path):
    run_dir, backup = tmp_path / "run", tmp_path / "backup"
    epochs = 8
    before = train_then_sigkill(run_dir, backup, epochs, after_epochs=3)
    assert not (run_dir / "model.keras").exists()
    out = run_cli_in_process(train_args(run_dir, backup, epochs))  # the resume: this process will do
    assert out.returncode == 0, out.stderr[-3000:]
    after = progress(run_dir)[len(before) :]
    steps = 10 * LABELS_PER_CLASS // 64
    last_before = before[-1]["epoch"]
    first_after = after[0]["epoch"]
    assert last_before <= first_after <= last_before + 1  # at most one epoch of work lost
    assert after[-1]["epoch"] == epochs - 1 and (run_dir / "model.keras").exists()
    for entry in after:  # both optimizers' iteration counts continue from the backup
        assert entry["descriptor_iterations"] == (entry["epoch"] + 1) * steps
        assert entry["generator_iterations"] == (entry["epoch"] + 1) * steps


@pytest.mark.slow
def test_corrupted_or_mismatched_backup_is_a_clear_error(tmp_path):
    run_dir, backup = tmp_path / "run", tmp_path / "backup"
    train_then_sigkill(run_dir, backup, 8, after_epochs=1, after_backups=1)  # an interrupted run leaves its backup
    newest = sorted(backup.glob("epoch-*"))[-1]
    assert (newest / "weights.weights.h5").exists() and (newest / "state.json").exists()
    mismatch = run_cli_in_process(train_args(run_dir, backup, 2, ["--set", "num_bits=32"]))
    assert mismatch.returncode == 2 and "different configuration" in mismatch.stderr and "num_bits" in mismatch.stderr
    for checkpoint in backup.glob("epoch-*"):  # every checkpoint unreadable: nothing to resume from
        (checkpoint / "weights.weights.h5").write_bytes(b"\x89HDF\r\n garbage")
    corrupt = run_cli_in_process(train_args(run_dir, backup, 2))
    assert corrupt.returncode == 2 and "no readable checkpoint" in corrupt.stderr and "Traceback" not in corrupt.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_together_and_the_chief_saves(tmp_path):
    workers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = []
    for i in range(2):
        cmd = [
            sys.executable,
            "-m",
            "coophash_keras.cli",
            "train",
            "--epochs",
            "2",
            "--bits",
            "16",
            "--batch-size",
            "64",
            "--labels-per-class",
            "20",
            "--run-dir",
            str(tmp_path / f"w{i}"),
            "--workers",
            workers,
            "--task-index",
            str(i),
            "--progress",
            "none",
            *SMALL,
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env={k: v for k, v in ENV.items() if k != "TF_CONFIG"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    assert "2 replicas" in outs[0][0]
    assert (tmp_path / "w0" / "model.keras").exists() and not (tmp_path / "w1" / "model.keras").exists()
    chief, worker = progress(tmp_path / "w0"), progress(tmp_path / "w1")
    steps = 200 // 64
    assert [e["descriptor_iterations"] for e in chief] == [steps, 2 * steps]
    # synchronous training: both workers hold the same weights, so their losses agree
    assert chief[-1]["logs"]["loss"] == pytest.approx(worker[-1]["logs"]["loss"], rel=1e-5)


def test_mixed_precision_keeps_langevin_and_energies_float32(tiny_config, digits):
    import tensorflow as tf

    from coophash_keras.preprocessing import normalize_images

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = CoopHash(tiny_config)
        model.compile()
        assert model.hash_network.base.compute_dtype == "float16"
        assert isinstance(model.descriptor_optimizer, keras.optimizers.LossScaleOptimizer)
        hist = model.fit(digits.subset(np.arange(128)).as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
        assert all(np.isfinite(v[0]) for v in hist.history.values())
        x = normalize_images(tf.constant(digits.images[:4]))
        c = tf.one_hot([0, 1, 2, 3], 10)
        assert model.hash_network.energy(x, c).dtype == tf.float32
        revised, norm = model.langevin_revise(x, c, tf.constant([1, 2]))
        assert revised.dtype == tf.float32 and np.isfinite(float(norm))
        assert model.generator(tf.zeros([1, tiny_config.latent_dim]), c[:1]).dtype == tf.float32
        assert set(np.unique(model.encode(digits.images[:8]))) <= {-1, 1}
    finally:
        keras.mixed_precision.set_global_policy("float32")
