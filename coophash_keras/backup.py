"""Crash-consistent backups of a training run, so a run killed at any moment resumes having lost at
most the epoch in progress.

Keras' BackupAndRestore rewrites `latest.weights.h5` in place (a kill mid-write leaves a file that
cannot be read, and every epoch is lost) and deletes the backup when `fit` ends, before the caller
has saved the final model. Here every epoch's backup is a new directory, written under a temporary
name and renamed when complete:

    <backup_dir>/epoch-000003/{weights.weights.h5, state.json}      state: epoch, training seconds

The newest complete directory is the one restored (a directory that cannot be read is skipped, so
the one before it is used); older ones are deleted only after a newer one is complete; and the
backup stays until the caller removes it (coophash_keras.runs does, after the run's files are on
disk, with `remove_backup`). `coophash_config.json` records the configuration the backup belongs
to. Whatever is being written or deleted has a hidden name (`.epoch-000003.tmp-XXXX`), so a kill
never leaves an incomplete `epoch-*`; the next run clears the hidden leftovers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time

import keras

from coophash_keras.faults import pause_point

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


def _remove_tree(path):
    """Delete a directory so that a kill midway leaves nothing that looks complete: it is first
    renamed to a hidden temporary name (cleared by `remove_hidden_leftovers`), then deleted."""
    parent, name = os.path.split(path)
    hidden = os.path.join(parent, f".{name}.removing")
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(path, hidden)
    return hidden


def remove_hidden_leftovers(backup_dir):
    """Delete what processes killed inside `RunBackup.save` left: its hidden temporaries and
    half-deleted old checkpoints (every hidden entry of a backup dir is ours)."""
    if not os.path.isdir(backup_dir):
        return
    for name in os.listdir(backup_dir):
        path = os.path.join(backup_dir, name)
        if name.startswith(".") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith("."):
            with contextlib.suppress(OSError):
                os.remove(path)


def remove_backup(backup_dir):
    """Delete a finished run's backup: renamed away first (a run killed here is complete, and its
    re-run must not find half a backup), then deleted; `remove_stale_backup` clears a leftover."""
    if os.path.isdir(backup_dir):
        hidden = _remove_tree(os.path.abspath(backup_dir))
        pause_point(os.path.basename(os.path.abspath(backup_dir)), "remove")
        shutil.rmtree(hidden, ignore_errors=True)


def remove_stale_backup(backup_dir):
    """The renamed-away backup of a run killed while `remove_backup` deleted it."""
    parent, name = os.path.split(os.path.abspath(backup_dir))
    shutil.rmtree(os.path.join(parent, f".{name}.removing"), ignore_errors=True)


class RunBackup(keras.callbacks.Callback):
    """Restores the newest readable checkpoint when `fit` starts (weights, every optimizer's state,
    the epoch to start at) and writes one at the end of every epoch. `restored_state` is the
    state.json that was restored (None for a fresh start).

    List it LAST among the callbacks: an epoch is in the backup only once every callback (the
    progress line, best.keras) is done with it. Call
    `restore(model)` before `fit` if another callback reads the weights when training begins."""

    def __init__(self, backup_dir, keep=2, write=True):
        super().__init__()
        self.backup_dir = backup_dir
        self.write = write  # under a multi-worker strategy only the chief writes; every worker restores
        self.keep = max(2, int(keep))
        self.restored_state = None
        self._restored = False
        self._seconds_before = 0.0  # training time of the epochs restored
        self._began = None

    def restore(self, model):
        """Load the newest readable checkpoint into `model`; return its state (or None)."""
        problems = []
        self._restored = True
        if self.write:
            remove_hidden_leftovers(self.backup_dir)
        for path in checkpoints(self.backup_dir):
            try:
                state = read_state(path)
                model.load_weights(os.path.join(path, WEIGHTS))
            except Exception as exc:  # noqa: BLE001 - an unreadable checkpoint is skipped, whatever broke
                problems.append(f"{os.path.basename(path)} ({type(exc).__name__}: {exc})")
                continue
            self.restored_state = state
            self._seconds_before = float(state.get("train_seconds", 0.0))
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
        self._began = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.write:
            self.save(epoch + 1)

    @property
    def train_seconds(self):
        """Training time of every epoch kept, across restarts (epochs lost to a kill not counted)."""
        return self._seconds_before + (time.time() - self._began if self._began is not None else 0.0)

    def save(self, epoch):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{epoch:06d}"
        final = os.path.join(self.backup_dir, name)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=self.backup_dir)
        try:
            pause_point(name, "begin")
            weights = os.path.join(tmp, WEIGHTS)
            self.model.save_weights(weights)
            with open(weights, "rb+") as fh:
                os.fsync(fh.fileno())
            state = {"epoch": epoch, "train_seconds": self.train_seconds}
            with open(os.path.join(tmp, STATE), "w") as fh:
                json.dump(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            pause_point(name, "commit")
            if os.path.exists(final):  # a re-run of an epoch that was already backed up
                shutil.rmtree(_remove_tree(final))
            os.replace(tmp, final)
            _fsync_dir(self.backup_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for old in checkpoints(self.backup_dir)[self.keep :]:
            shutil.rmtree(_remove_tree(old), ignore_errors=True)
