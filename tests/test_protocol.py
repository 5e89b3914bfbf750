"""benchmarks/protocol.py's own arithmetic: a run trains exactly the steps it is asked for; with
--backup, a run killed between epochs resumes."""

import json
import os
import sys

import pytest
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from protocol import epoch_length, equal_time_steps, with_corrupted_training_images  # noqa: E402


@pytest.mark.parametrize(
    "steps, log_every, expected",
    [(1000, 250, 250), (12900, 500, 430), (5900, 500, 295), (100, 250, 100), (12500, 500, 500)],
)
def test_epochs_split_the_steps_exactly(steps, log_every, expected):
    d = epoch_length(steps, log_every)
    assert d == expected and steps % d == 0 and d <= log_every


def test_steps_that_only_split_into_tiny_epochs_are_refused():
    with pytest.raises(ValueError, match="--steps 997 has no divisor between 125 and 250.*e.g. 1000"):
        epoch_length(997, 250)


STEP_TIMES = {"alone": True, "methods": {"coophash": {"train_step_s": 1.15}, "orthohash": {"train_step_s": 0.089}}}


def test_equal_time_steps_come_from_the_step_times_measured_alone():
    assert equal_time_steps(1000, "coophash", "orthohash", STEP_TIMES) == 12900  # 1000 x 1.15 / 0.089, to 100
    assert equal_time_steps(1000, "coophash", "coophash", STEP_TIMES) == 1000
    assert equal_time_steps(1000, "orthohash", "coophash", STEP_TIMES) == 100  # never fewer than 100
    with pytest.raises(ValueError, match="no step time for 'dpn'.*coophash"):
        equal_time_steps(1000, "coophash", "dpn", STEP_TIMES)
    with pytest.raises(ValueError, match="not measured alone"):
        equal_time_steps(1000, "coophash", "orthohash", {**STEP_TIMES, "alone": False})


def test_equal_time_steps_refuse_step_times_from_another_cpu():
    here = {**STEP_TIMES, "cpu": "Intel(R) Xeon(R) Processor"}
    assert equal_time_steps(1000, "coophash", "orthohash", here, cpu="Intel(R) Xeon(R) Processor") == 12900
    with pytest.raises(ValueError, match="measured on 'AMD EPYC' and this machine is 'Intel.*alone here first"):
        equal_time_steps(1000, "coophash", "orthohash", {**here, "cpu": "AMD EPYC"}, cpu="Intel(R) Xeon(R) Processor")
    with pytest.raises(ValueError, match="an unrecorded CPU"):
        equal_time_steps(1000, "coophash", "orthohash", STEP_TIMES, cpu="AMD EPYC")


def test_step_times_file_missing_is_none_and_unreadable_is_a_named_error(tmp_path):
    from results_tables import load_step_times

    assert load_step_times(str(tmp_path / "none.json")) is None
    (tmp_path / "bad.json").write_text('{"alone": tr')
    with pytest.raises(ValueError, match="cannot read the step times .*bad.json"):
        load_step_times(str(tmp_path / "bad.json"))


def test_corrupted_training_images_are_a_seeded_share_of_the_labelled_ones_and_nothing_else(digits):
    import numpy as np

    from coophash_keras.data import retrieval_split

    split = retrieval_split(digits.labels, 10, 20, database="rest", seed=0)
    same, count = with_corrupted_training_images(digits, split, 0.0, seed=0)
    assert same is digits and count == 0
    original = digits.images.copy()
    data, count = with_corrupted_training_images(digits, split, 0.2, seed=0)
    changed = np.flatnonzero(np.any(data.images != digits.images, axis=(1, 2, 3)))
    assert count == round(0.2 * len(split.train)) and 0 < len(changed) <= count
    assert set(changed) <= set(split.train)  # pool, queries and database untouched
    np.testing.assert_array_equal(digits.images, original)  # the caller's images are not modified
    again, _ = with_corrupted_training_images(digits, split, 0.2, seed=0)
    other, _ = with_corrupted_training_images(digits, split, 0.2, seed=1)
    np.testing.assert_array_equal(again.images, data.images)
    assert np.any(other.images != data.images)


@pytest.mark.slow
def test_a_run_killed_between_epochs_resumes_with_backup_and_reports_no_timing(tmp_path):
    """protocol.py --backup: a run killed while it backs up epoch 2 is started again by the same
    command, resumes after epoch 1 instead of from scratch, and its JSON says so and drops the
    timing (its epoch times span the restart)."""
    import signal
    import subprocess

    from coophash_keras.faults import MARKER, PAUSE_ENV, SECONDS_ENV

    out, root = tmp_path / "out", tmp_path / "runs"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "protocol.py"), "--dataset", "digits"]
    cmd += ["--methods", "orthohash", "--labels-per-class", "10", "--bits", "8", "--seeds", "0", "--steps", "30"]
    cmd += ["--log-every", "10", "--out", str(out), "--run-root", str(root), "--backup"]
    env = dict(os.environ, **{PAUSE_ENV: "epoch-000002:begin", SECONDS_ENV: "120"})
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stderr:
            if MARKER in line:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    run_dir = root / "digits_orthohash_L10_K8_s0"
    assert (root / "digits_orthohash_L10_K8_s0_backup").is_dir() and not list(out.glob("*.json"))
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    (path,) = out.glob("*.json")
    with open(path) as fh:
        record = json.load(fh)
    assert record["resumed_from_epoch"] == 1 and record["steps"] == 30
    assert record["alone"] is False and record["ms_per_step"] is None
    with open(run_dir / "progress.jsonl") as fh:
        assert [json.loads(line)["epoch"] for line in fh] == [0, 1, 2]  # each epoch once across the two processes
    assert not (root / "digits_orthohash_L10_K8_s0_backup").exists()  # removed once the run was written
