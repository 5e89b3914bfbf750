"""One training run as a library call: `train_run(RunSpec(...))` loads the data, splits it, builds the
config and the model (under a distribution strategy if asked), wires the callbacks (validation
mAP, TensorBoard, backup/resume, progress log), trains, and writes the run directory. The CLI and
the benchmark harness both call it. The spec is run_spec.py's, the strategy strategy.py's, and
reading a run back (`evaluate_run`, `load_run`) evaluation.py's; all are importable from here.

A run directory holds: model.keras, config.json, split.npz, history.json, run.json, progress.jsonl
(and best.keras with validation, metrics.json after `evaluate_run`). Every file is written to a
temporary name and renamed, so a crash never leaves half a file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.backup import RunBackup, remove_backup, remove_stale_backup
from coophash_keras.callbacks import (
    BestModelCheckpoint,
    HashingTensorBoard,
    ProgressLog,
    RetrievalMetricsCallback,
    check_backup_dir,
    history_from_progress,
    keep_progress,
)
from coophash_keras.data import RetrievalSplit, load_dataset, retrieval_split
from coophash_keras.data.files import dataset_record
from coophash_keras.diagnostics import GeneratorDiagnosticsCallback, has_generator
from coophash_keras.evaluation import (
    evaluate_run,
    finished_run_record,
    load_run,
    load_run_data,
    model_path,
    validation_sets,
)
from coophash_keras.io import atomic_write_json, load_model, remove_temporaries, save_model
from coophash_keras.registry import model_class
from coophash_keras.run_data import _load_pool, fitting_dataset, training_dataset
from coophash_keras.run_spec import RUN_FILE, RunError, RunSpec, build_config
from coophash_keras.strategy import is_chief, make_strategy

# The spec, the strategy and evaluation live in their own modules; what callers import stays here.
__all__ = ["RunResult", "RunSpec", "evaluate_run", "load_run", "load_run_data", "model_path", "train_run"]


@dataclasses.dataclass
class RunResult:
    run_dir: str
    model: Any
    history: dict
    train_seconds: float
    resumed_from_epoch: int = 0
    is_chief: bool = True


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow (so a run's initial weights follow its seed); with
    `deterministic`, also TensorFlow's op determinism, so that one spec trains one model bit for
    bit on one machine. Op determinism stays on for the rest of the process."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _callbacks(spec, model, data, split, best_val_map=None):
    """`best_val_map`: the best validation mAP of the epochs a resumed run restored."""
    callbacks = []
    if spec.val_every:  # first, so TensorBoard, ModelCheckpoint and a tuner see val_map
        callbacks.append(
            RetrievalMetricsCallback(*validation_sets(data, split), every_n_epochs=spec.val_every, topk=(100,))
        )
        # A resumed run's best.keras must be beaten, not overwritten by the first epoch after the restart.
        callbacks.append(
            BestModelCheckpoint(os.path.join(spec.run_dir, "best.keras"), initial_value_threshold=best_val_map)
        )
    if spec.tensorboard:
        sample = data.subset(split.query[:256])
        projector = data.subset(split.database[:1000])
        callbacks.append(
            HashingTensorBoard(
                spec.tensorboard,
                sample.pixels(),
                sample.labels,
                projector_images=projector.pixels(),
                projector_labels=projector.labels,
                class_names=data.class_names,
            )
        )
        callbacks.append(keras.callbacks.TensorBoard(spec.tensorboard, histogram_freq=0))
        if has_generator(model) and not data.multi_label:  # five points over the run: the samples cost seconds
            callbacks.append(
                GeneratorDiagnosticsCallback(spec.tensorboard, data, every_n_epochs=max(1, spec.epochs // 5))
            )
    return callbacks


@dataclasses.dataclass
class PreparedRun:
    strategy: Any
    data: Any
    split: Any
    config: Any
    model_class: Any
    pool: Any = None  # the UnlabeledPool of `--unlabeled`, or None

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def prepare_run(spec: RunSpec, data=None, split=None) -> PreparedRun:
    """Strategy (created first: a multi-worker strategy must exist before any other TF op), data,
    split and config of a run; `data` and `split` default to loading `spec.dataset` and a seeded
    split of it."""
    strategy = make_strategy(spec.workers, spec.task_index, spec.mirrored)
    if spec.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    cls = model_class(spec.model)
    if data is None:
        data = load_dataset(spec.dataset, spec.data_dir, image_size=spec.image_size, channels=spec.channels)
    label_free = not cls.needs_labels
    if split is None:
        if label_free and data.num_classes == 0:  # images:PATH: every image is fitted on and indexed
            every = np.arange(len(data))
            split = RetrievalSplit(np.zeros(0, np.int64), every, every, np.zeros(0, np.int64))
        else:
            split = retrieval_split(data.labels, spec.query_per_class, spec.labels_per_class, seed=spec.seed)
    config = build_config(spec, data)
    seed_everything(config.seed, config.deterministic)
    if not cls.fitted_in_closed_form and len(split.train) < config.batch_size:
        raise RunError(f"only {len(split.train)} labeled training images, fewer than one batch of {config.batch_size}")
    pool = _load_pool(spec, cls, config, data, split)
    return PreparedRun(strategy, data, split, config, cls, pool)


def train_run(spec: RunSpec, data=None, split=None, extra_callbacks=()) -> RunResult:
    """Train one model and write its run directory (see the module docstring). With
    `spec.backup_dir`, a run killed at any moment and started again with the same spec resumes
    from its last complete epoch; the backup is removed only once the run's files are written."""
    run = prepare_run(spec, data, split)
    data, split, config = run.data, run.split, run.config
    # Leftovers of a kill, cleared whether the run then trains or turns out to be finished.
    remove_temporaries(spec.run_dir)  # of a run killed while it saved
    if spec.backup_dir:
        remove_stale_backup(spec.backup_dir)  # of a run killed while it deleted its backup
    finished = finished_run_record(spec, config, run.pool)
    if finished is not None:
        print(
            f"{spec.run_dir} is already finished with this configuration: nothing to train "
            "(delete it, or leave out --backup-dir, to train it again)",
            flush=True,
        )
        with open(os.path.join(spec.run_dir, "history.json")) as fh:
            history = json.load(fh)
        model = load_model(os.path.join(spec.run_dir, "model.keras"))
        seconds = float(finished.get("train_seconds", 0.0))
        return RunResult(spec.run_dir, model, history, seconds, spec.epochs, is_chief(run.strategy))
    os.makedirs(spec.run_dir, exist_ok=True)
    with run.scope():
        model = run.model_class(config)
        model.compile()
    chief = is_chief(run.strategy)
    backup = None
    if spec.backup_dir:
        # The backup keeps the pool's record beside the config: a resume with another pool is refused.
        check_backup_dir(spec.backup_dir, model, {"unlabeled_data": run.pool.record()} if run.pool else None)
        backup = RunBackup(spec.backup_dir, write=chief)
    # Restored before fit, so every callback sees the restored weights from the start.
    resuming = backup is not None and backup.restore(model) is not None
    progress = os.path.join(spec.run_dir, "progress.jsonl")
    if resuming:
        keep_progress(progress, backup.restored_state["epoch"])  # epochs after the backup are trained again
    elif os.path.exists(progress):
        os.remove(progress)  # a fresh run's log starts empty
    best = max((v for v in history_from_progress(progress).get("val_map", []) if v is not None), default=None)
    # Order: the callbacks that add to the epoch's logs (validation mAP, bit correlation) first; then
    # the progress line; the backup last, so an epoch is backed up only once every callback is done
    # with it (a kill between the two re-runs the epoch, and keep_progress drops its line).
    callbacks = _callbacks(spec, model, data, split, best) + list(extra_callbacks) + [ProgressLog(progress)]
    if backup is not None:
        callbacks.append(backup)
    where = f" ({run.strategy.num_replicas_in_sync} replicas)" if run.strategy is not None else ""
    if run.model_class.fitted_in_closed_form:
        ds = fitting_dataset(data, split, run.pool, spec.seed)
        own = len(split.train) if run.pool is not None else len(np.union1d(split.train, split.unlabeled))
        print(
            f"fitting {run.model_class.__name__} (closed form, labels ignored) on {own} images of {data.name}"
            f"{f' and the pool {run.pool.name}' if run.pool is not None else ''}, {config.num_bits} bits "
            f"-> {spec.run_dir}",
            flush=True,
        )
    else:
        ds = training_dataset(
            run.model_class, config, data, split, spec.seed, repeat=spec.steps_per_epoch is not None, pool=run.pool
        )
        print(
            f"training {run.model_class.__name__} on {data.name}: {len(split.train)} labeled images, "
            f"{config.num_bits} bits, {spec.epochs} epochs -> {spec.run_dir}{where}",
            flush=True,
        )
    if run.pool is not None:
        how = "streamed from its files" if run.pool.streamed else "in memory"
        replaced = (
            f"; it replaces the {len(split.unlabeled)} images --labels-per-class left over"
            if len(split.unlabeled)
            else ""
        )
        print(f"unlabelled pool: {run.pool.name}, {len(run.pool)} images, {how}{replaced}", flush=True)
    if resuming:
        print(f"resuming from {spec.backup_dir} after epoch {backup.restored_state['epoch']}", flush=True)
    start = time.time()
    model.fit(ds, epochs=spec.epochs, steps_per_epoch=spec.steps_per_epoch, verbose=spec.verbose, callbacks=callbacks)
    seconds = time.time() - start
    if getattr(model.config, "served_energy", None) == "min_z" and hasattr(model, "fit_score_statistics"):
        model.fit_score_statistics(data.images[split.train])  # the served score's z-statistics
    history = history_from_progress(progress)  # every epoch since the run began, across restarts
    if backup is not None:
        seconds = backup.train_seconds  # the epochs kept, across restarts
    if chief:
        # Each file is written whole or not at all (coophash_keras.io.atomic_path); the backup goes
        # last, so a run killed anywhere in here resumes after its last epoch and writes them again.
        save_model(model, os.path.join(spec.run_dir, "model.keras"))
        atomic_write_json(os.path.join(spec.run_dir, "config.json"), config.to_dict())
        split.save(os.path.join(spec.run_dir, "split.npz"))
        atomic_write_json(os.path.join(spec.run_dir, "history.json"), history)
        record = dict(spec.record(), **dataset_record(data), train_seconds=seconds)  # + file data's size, fingerprint
        if run.pool is not None:
            record["unlabeled_data"] = run.pool.record()  # name, count, fingerprint: re-checked on a re-run
        atomic_write_json(os.path.join(spec.run_dir, RUN_FILE), record)
        if spec.backup_dir:
            remove_backup(spec.backup_dir)  # the run is safely on disk now
    return RunResult(
        spec.run_dir,
        model,
        history,
        seconds,
        resumed_from_epoch=backup.restored_state["epoch"] if resuming else 0,
        is_chief=chief,
    )
