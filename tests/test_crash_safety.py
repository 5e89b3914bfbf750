"""Crash consistency: a run SIGKILLed inside its saves resumes, cleans up and completes (the
30-kill version is benchmarks/fault_injection.py); a save refused for non-finite weights leaves
the good file as it was, whichever way it is called."""

import json
import os
import sys

import keras
import numpy as np
import pytest
from conftest import REPO

from coophash_keras import CoopHash
from coophash_keras.backup import RunBackup, checkpoints
from coophash_keras.io import save_model

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
from fault_injection import Harness  # noqa: E402


@pytest.mark.slow
def test_killed_inside_saves_the_rerun_resumes_cleans_up_and_completes(tmp_path):
    h = Harness(str(tmp_path), epochs=3, steps=4)
    # 1. inside the backup of epoch 2: the newest complete checkpoint is epoch 1's
    r = h.run(target="epoch-000002:begin")
    assert r["killed"] and r["paused_at"] == "epoch-000002:begin" and r["problems"] == []
    assert r["epochs_done"] == 2 and r["resume_epoch"] == 1 and r["epochs_lost"] == 1
    assert any(n.startswith(".epoch-000002.tmp-") for n in r["leftovers"])
    # 2. inside model.keras after the last epoch; the re-run resumed after epoch 1 and had
    #    removed the temporary directory of kill 1 (checked by the harness: resume_problems)
    r = h.run(target="model.keras:commit")
    assert r["killed"] and r["resumed_from"] == 1 and r["resume_problems"] == [] and r["problems"] == []
    assert r["resume_epoch"] == 3 and r["epochs_lost"] == 0
    assert any(n.startswith(".model.keras.tmp-") for n in r["leftovers"])
    # 3. inside history.json: every epoch is backed up, nothing to train, only files to write
    r = h.run(target="history.json:begin")
    assert r["killed"] and r["resumed_from"] == 3 and r["resume_problems"] == [] and r["problems"] == []
    # 3b. inside the deletion of the backup, the run's files all written: the run is finished,
    #     and the re-run below must still clear the renamed-away backup
    r = h.run(target="*:remove")
    assert r["killed"] and r["complete_at_kill"] and r["problems"] == []
    assert any(n.endswith(".removing") for n in r["leftovers"])
    # 4. to the end: every file readable, each epoch once in history.json and progress.jsonl,
    #    the optimizers' iterations continued, no temporary and no backup left
    r = h.run()
    assert r["returncode"] == 0, r["stderr_tail"]
    assert r["resume_problems"] == [] and r["problems"] == []
    with open(os.path.join(h.run_dir, "history.json")) as fh:
        history = json.load(fh)  # spans the three processes that trained
    assert len(history["loss"]) == 3 and len(history["val_map"]) == 3
    assert os.listdir(tmp_path) == ["run"]
    # 5. the same command once more (a scheduler re-running a job that had ended): nothing is
    #    trained again, no backup dir appears, and the finished files are left as they were
    files = {n: os.stat(os.path.join(h.run_dir, n)).st_mtime_ns for n in os.listdir(h.run_dir)}
    r = h.run(target="epoch-000001:begin")  # the pause is never reached: no epoch is trained
    assert r["returncode"] == 0 and not r["killed"] and r["paused_at"] is None and r["problems"] == []
    assert {n: os.stat(os.path.join(h.run_dir, n)).st_mtime_ns for n in os.listdir(h.run_dir)} == files
    assert os.listdir(tmp_path) == ["run"]


def poison(model):
    kernel = model.hash_network.hash_head.projection.kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def checkpoint_callback(weights_only):
    def save(model, path):
        callback = keras.callbacks.ModelCheckpoint(path, save_weights_only=weights_only)
        callback.set_model(model)
        callback.on_epoch_end(0, {"loss": 1.0})

    return save


SAVES = {
    "model.save": (".keras", lambda m, p: m.save(p)),
    "keras.saving.save_model": (".keras", lambda m, p: keras.saving.save_model(m, p)),
    "io.save_model": (".keras", save_model),
    "save_weights": (".weights.h5", lambda m, p: m.save_weights(p)),
    "ModelCheckpoint": (".keras", checkpoint_callback(False)),
    "ModelCheckpoint weights": (".weights.h5", checkpoint_callback(True)),
}


@pytest.mark.parametrize("way", list(SAVES))
def test_a_refused_save_leaves_the_good_file_as_it_was(tmp_path, tiny_config, way):
    suffix, save = SAVES[way]
    model = CoopHash(tiny_config)
    model.compile()
    path = str(tmp_path / f"good{suffix}")
    save(model, path)
    good = open(path, "rb").read()
    poison(model)
    with pytest.raises(ValueError, match="non-finite"):
        save(model, path)
    assert open(path, "rb").read() == good  # neither truncated nor replaced
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # and no temporary left


def test_a_refused_backup_keeps_the_last_checkpoint(tmp_path, tiny_config):
    model = CoopHash(tiny_config)
    model.compile()
    backup = RunBackup(str(tmp_path))
    backup.set_model(model)
    backup.save(1)
    poison(model)
    with pytest.raises(ValueError, match="non-finite"):
        backup.save(2)
    assert [os.path.basename(p) for p in checkpoints(str(tmp_path))] == ["epoch-000001"]
    assert sorted(os.listdir(tmp_path)) == ["epoch-000001"]


def test_a_run_stopped_by_divergence_resumes_from_its_backup_with_the_other_policy(tmp_path, tiny_config):
    from coophash_keras.callbacks import check_backup_dir

    check_backup_dir(str(tmp_path), CoopHash(tiny_config))
    check_backup_dir(str(tmp_path), CoopHash(tiny_config.replace(divergence_policy="shrink")))  # no error
    with pytest.raises(ValueError, match=r"different configuration \(fields \['langevin_steps'\]\)"):
        check_backup_dir(str(tmp_path), CoopHash(tiny_config.replace(langevin_steps=7)))


def test_a_model_holding_non_finite_weights_refuses_to_train_or_be_called(tiny_config, digits):
    """`keras.saving.save_model` reads nothing of the model but `built` before it truncates the file,
    so `built` refuses outside traced code (models/saving.py), and so do fit and eager calls."""
    model = CoopHash(tiny_config)
    model.compile()
    model(digits.images[:2])  # a healthy model answers
    poison(model)
    with pytest.raises(ValueError, match="non-finite"):
        model(digits.images[:2])
    with pytest.raises(ValueError, match="non-finite"):
        model.fit(digits.images[:32], digits.labels[:32], batch_size=32, epochs=1, verbose=0)
