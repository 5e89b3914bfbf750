"""Crash-consistent backups of a training run, so a run killed at any moment resumes having lost at
most the epoch in progress.

Keras' BackupAndRestore rewrites `latest.weights.h5` in place (a kill mid-write leaves a file that
cannot be read, and every epoch is lost) and deletes the backup when `fit` ends, before the caller
has saved the final model. Here every epoch's backup is a new directory, written under a temporary
name and renamed when complete:

    <backup_dir>/epoch-000003/{weights.weights.h5, state.json}      state: the epoch to resume at

The newest complete directory is the one restored (a directory that cannot be read is skipped, so
the one before it is used); older ones are deleted only after a newer one is complete; and the
backup stays until the caller removes it (coophash_keras.runs does, after the run's files are on
disk). `coophash_config.json` records the configuration the backup belongs to.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

import keras

_EPOCH_DIR = re.compile(r"^epoch-(\d{6})$")
WEIGHTS, STATE = "weights.weights.h5", "state.json"


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoints(backup_dir):
    """Complete checkpoint directories, newest first."""
    if not os.path.isdir(backup_dir):
        return []
    found = []
    for name in os.listdir(backup_dir):
        m = _EPOCH_DIR.match(name)
        path = os.path.join(backup_dir, name)
        if m and os.path.isfile(os.path.join(path, WEIGHTS)) and os.path.isfile(os.path.join(path, STATE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found, reverse=True)]


def read_state(checkpoint_dir):
    with open(os.path.join(checkpoint_dir, STATE)) as fh:
        return json.load(fh)


class RunBackup(keras.callbacks.Callback):
    """Restores the newest readable checkpoint when `fit` starts (weights, every optimizer's state,
    the epoch to start at) and writes one at the end of every epoch. `restored_state` is the
    state.json that was restored (None for a fresh start)."""

    def __init__(self, backup_dir, keep=2, write=True):
        super().__init__()
        self.backup_dir = backup_dir
        self.write = write  # under a multi-worker strategy only the chief writes; every worker restores
        self.keep = max(2, int(keep))
        self.restored_state = None
        self._restored = False

    def restore(self, model):
        """Load the newest readable checkpoint into `model`; return its state (or None)."""
        problems = []
        self._restored = True
        for path in checkpoints(self.backup_dir):
            try:
                state = read_state(path)
                model.load_weights(os.path.join(path, WEIGHTS))
            except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is skipped, whatever broke
                problems.append(f"{os.path.basename(path)} ({type(exc).__name__}: {exc})")
                continue
            self.restored_state = state
            return state
        if problems:
            raise ValueError(
                f"no readable checkpoint in {self.backup_dir}: {'; '.join(problems)}; delete it to start over"
            )
        return None

    def on_train_begin(self, logs=None):
        state = self.restored_state if self._restored else self.restore(self.model)
        if state is not None:
            self.model._initial_epoch = int(state["epoch"])  # what Keras' BackupAndRestore sets too

    def on_epoch_end(self, epoch, logs=None):
        if self.write:
            self.save(epoch + 1)

    def save(self, epoch):
        os.makedirs(self.backup_dir, exist_ok=True)
        final = os.path.join(self.backup_dir, f"epoch-{epoch:06d}")
        tmp = tempfile.mkdtemp(prefix=".epoch-", dir=self.backup_dir)
        try:
            weights = os.path.join(tmp, WEIGHTS)
            self.model.save_weights(weights)
            with open(weights, "rb+") as fh:
                os.fsync(fh.fileno())
            with open(os.path.join(tmp, STATE), "w") as fh:
                json.dump({"epoch": epoch}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            if os.path.exists(final):  # a re-run of an epoch that was already backed up
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.backup_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in checkpoints(self.backup_dir)[self.keep :]:
            shutil.rmtree(old, ignore_errors=True)
        for name in os.listdir(self.backup_dir):  # temporaries of a process killed mid-save
            if name.startswith(".epoch-") and os.path.join(self.backup_dir, name) != tmp:
                shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
