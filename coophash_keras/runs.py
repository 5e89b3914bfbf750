"""One training run as a library call: `train_run(RunSpec(...))` loads the data, splits it, builds the
config and the model (under a distribution strategy if asked), wires the callbacks (validation
mAP, TensorBoard, backup/resume, progress log), trains, and writes the run directory. The CLI and
the benchmark harness both call it.

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

from coophash_keras.io import atomic_write_json

RUN_FILE = "run.json"


class RunError(ValueError):
    """A run cannot start or be read: the message names the problem (the CLI prints it as one line)."""


@dataclasses.dataclass
class RunSpec:
    """Everything a training run needs, with the CLI's defaults."""

    run_dir: str
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: tuple | None = None  # (H, W) for folder:/csv:/images: data (default: the first image's size)
    channels: int | None = None  # 1 or 3 for folder:/csv:/images: data (default: the majority)
    model: str | None = None  # a registry name; None: the method's model, else "coophash"
    ablation: str | None = None
    # A named configuration, `MODEL[:VARIANT[/ABLATION]]` (variants.py). It names the model, and
    # build_config applies its changes after the config file and before `overrides`.
    method: str | None = None
    bits: int = 32
    epochs: int = 20
    steps_per_epoch: int | None = None  # None: one pass over the labelled images per epoch
    batch_size: int = 64
    query_per_class: int = 20
    labels_per_class: int | None = None
    seed: int = 0
    deterministic: bool = False  # config.deterministic: op determinism, so one spec gives one model
    overrides: dict = dataclasses.field(default_factory=dict)
    config_file: str | None = None  # a config.json / best_config.json to start from
    val_every: int = 0
    tensorboard: str | None = None
    backup_dir: str | None = None
    mixed_precision: bool = False
    workers: list | None = None  # host:port of every worker (MultiWorkerMirroredStrategy)
    task_index: int | None = None
    mirrored: bool = False
    verbose: int | str = "auto"

    def __post_init__(self):
        if self.method:
            from coophash_keras.variants import parse_method

            try:
                model, _, ablation = parse_method(self.method)
            except ValueError as e:
                raise RunError(str(e)) from None
            if self.ablation and ablation:
                raise RunError(f"method {self.method!r} names its ablation; drop ablation={self.ablation!r}")
            if self.model not in (None, model):
                raise RunError(f"method {self.method!r} trains {model!r}, not model={self.model!r}")
            self.model = model
        elif self.model is None:
            self.model = "coophash"

    def record(self) -> dict:
        """What run.json keeps to re-load the data and split later."""
        return {
            k: getattr(self, k)
            for k in (
                "dataset",
                "data_dir",
                "model",
                "method",
                "ablation",
                "query_per_class",
                "labels_per_class",
                "seed",
                "epochs",
            )
        }


@dataclasses.dataclass
class RunResult:
    run_dir: str
    model: Any
    history: dict
    train_seconds: float
    resumed_from_epoch: int = 0
    is_chief: bool = True


def make_strategy(workers=None, task_index=None, mirrored=False):
    """None (default device), MultiWorkerMirroredStrategy (workers / TF_CONFIG) or Mirrored over
    the local GPUs. Create it before any other TF op runs."""
    import tensorflow as tf

    if workers:
        if task_index is None or not 0 <= task_index < len(workers):
            raise RunError(f"--task-index must be in [0, {len(workers) - 1}] for {len(workers)} workers")
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": task_index}}
        )
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if mirrored:
        return tf.distribute.MirroredStrategy()
    return None


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TensorFlow (so a run's initial weights follow its seed); with
    `deterministic`, also TensorFlow's op determinism, so that one spec trains one model bit for
    bit on one machine. Op determinism stays on for the rest of the process."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def is_chief(strategy) -> bool:
    if strategy is None or not os.environ.get("TF_CONFIG"):
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    return task.get("type") in ("chief", None) or (task.get("type") == "worker" and task.get("index", 0) == 0)


def validation_sets(data, split, max_database=5000, seed=0):
    """(query images, query labels, database images, database labels) for validation mAP; the
    database is subsampled to `max_database` so that validation stays cheap."""
    import numpy as np

    database = split.database
    if len(database) > max_database:
        database = np.sort(np.random.default_rng(seed).choice(database, max_database, replace=False))
    return data.images[split.query], data.labels[split.query], data.images[database], data.labels[database]


def build_config(spec: RunSpec, data):
    """The run's CoopHashConfig: data shapes and CLI values, then the config file, then the method's
    variant, then overrides (--set), then the ablation, so each names what it changes last."""
    from coophash_keras.config import CoopHashConfig
    from coophash_keras.variants import parse_method

    values = dict(
        image_shape=data.image_shape,
        num_classes=data.num_classes,
        multi_label=data.multi_label,
        num_bits=spec.bits,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
    if spec.config_file:
        if not os.path.exists(spec.config_file):
            raise RunError(f"missing config file {spec.config_file}")
        with open(spec.config_file) as fh:
            try:
                from_file = json.load(fh)
            except json.JSONDecodeError as exc:
                raise RunError(f"{spec.config_file} is not a JSON config: {exc}") from None
        # The data decides shapes and classes; the file decides everything else it names.
        for key in ("image_shape", "num_classes", "multi_label"):
            from_file.pop(key, None)
        values.update(from_file)
    ablation = spec.ablation
    if spec.method:
        _, variant_changes, ablation = parse_method(spec.method)  # __post_init__ validated it
        values.update(variant_changes)
    values.update(spec.overrides)
    if spec.deterministic:
        values["deterministic"] = True
    config = CoopHashConfig.from_dict(values)
    if ablation:
        if spec.model != "coophash":
            raise RunError("--ablation applies to --model coophash only")
        config = config.with_ablation(ablation)
    return config


def _callbacks(spec, model, data, split, best_val_map=None):
    """`best_val_map`: the best validation mAP of the epochs a resumed run restored."""
    import keras

    from coophash_keras.callbacks import BestModelCheckpoint, HashingTensorBoard, RetrievalMetricsCallback

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
                sample.images,
                sample.labels,
                projector_images=projector.images,
                projector_labels=projector.labels,
                class_names=data.class_names,
            )
        )
        callbacks.append(keras.callbacks.TensorBoard(spec.tensorboard, histogram_freq=0))
        from coophash_keras.diagnostics import GeneratorDiagnosticsCallback, has_generator

        if has_generator(model) and not data.multi_label:  # five points over the run: the samples cost seconds
            callbacks.append(
                GeneratorDiagnosticsCallback(spec.tensorboard, data, every_n_epochs=max(1, spec.epochs // 5))
            )
    return callbacks


def training_dataset(model_class, config, data, split, seed, repeat=False):
    """The labelled tf.data pipeline (augmented by `config.augmentation`, the same for every model),
    with a batch of the unlabelled pool per step for models that use one
    (`model_class.uses_unlabeled(config)`)."""
    from coophash_keras.data import with_unlabeled
    from coophash_keras.data.augment import augment_dataset

    batch_size = config.batch_size
    train = data.subset(split.train)
    ds = train.as_dataset(batch_size, shuffle=True, seed=seed, drop_remainder=True, repeat=repeat)
    ds = augment_dataset(ds, config.augmentation, seed)
    unlabeled_batch = batch_size * config.unlabeled_batch_ratio
    if model_class.uses_unlabeled(config) and len(split.unlabeled) >= unlabeled_batch:
        ds = with_unlabeled(ds, data.images[split.unlabeled], unlabeled_batch, seed)
    return ds


@dataclasses.dataclass
class PreparedRun:
    strategy: Any
    data: Any
    split: Any
    config: Any
    model_class: Any

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def prepare_run(spec: RunSpec, data=None, split=None) -> PreparedRun:
    """Strategy (created first: a multi-worker strategy must exist before any other TF op), data,
    split and config of a run; `data` and `split` default to loading `spec.dataset` and a seeded
    split of it."""
    import keras

    from coophash_keras.data import load_dataset, retrieval_split
    from coophash_keras.registry import model_class

    strategy = make_strategy(spec.workers, spec.task_index, spec.mirrored)
    if spec.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    cls = model_class(spec.model)
    if data is None:
        data = load_dataset(spec.dataset, spec.data_dir, image_size=spec.image_size, channels=spec.channels)
    if split is None:
        split = retrieval_split(data.labels, spec.query_per_class, spec.labels_per_class, seed=spec.seed)
    config = build_config(spec, data)
    seed_everything(config.seed, config.deterministic)
    if len(split.train) < config.batch_size:
        raise RunError(f"only {len(split.train)} labeled training images, fewer than one batch of {config.batch_size}")
    return PreparedRun(strategy, data, split, config, cls)


def history_from_progress(path):
    """{metric: one value per epoch} from progress.jsonl (the log that spans a resumed run), with
    None where an epoch has no value (validation every N epochs), so every list is as long as
    the number of epochs."""
    from coophash_keras.callbacks import read_progress

    # ProgressLog rewrites the file whole (temporary + rename), so no line is ever torn.
    entries = {e["epoch"]: e["logs"] for e in read_progress(path)}  # a re-run epoch replaces the lost one
    epochs = sorted(entries)
    keys = sorted({k for logs in entries.values() for k in logs})
    return {k: [entries[e].get(k) for e in epochs] for k in keys}


def finished_run_record(spec: RunSpec, config) -> dict | None:
    """run.json of a run this very spec already finished: resumable (`backup_dir` set), its backup
    gone (removed only once every file was written), and run.json and config.json the same as now.
    A scheduler that re-runs a preemptible job after it ended must not train it all over again."""
    run_file = os.path.join(spec.run_dir, RUN_FILE)
    if not spec.backup_dir or os.path.exists(spec.backup_dir) or not os.path.exists(run_file):
        return None
    try:
        with open(run_file) as fh:
            record = json.load(fh)
        with open(os.path.join(spec.run_dir, "config.json")) as fh:
            saved_config = json.load(fh)
    except (OSError, ValueError):
        return None  # not a finished run after all: train it
    expected = json.loads(json.dumps(spec.record()))
    if {k: record.get(k) for k in expected} != expected:
        return None
    return record if saved_config == json.loads(json.dumps(config.to_dict())) else None


def train_run(spec: RunSpec, data=None, split=None, extra_callbacks=()) -> RunResult:
    """Train one model and write its run directory (see the module docstring). With
    `spec.backup_dir`, a run killed at any moment and started again with the same spec resumes
    from its last complete epoch; the backup is removed only once the run's files are written."""
    from coophash_keras.backup import RunBackup, remove_backup, remove_stale_backup
    from coophash_keras.callbacks import ProgressLog, check_backup_dir, keep_progress
    from coophash_keras.data.files import dataset_record
    from coophash_keras.io import remove_temporaries, save_model

    run = prepare_run(spec, data, split)
    data, split, config = run.data, run.split, run.config
    # Leftovers of a kill, cleared whether the run then trains or turns out to be finished.
    remove_temporaries(spec.run_dir)  # of a run killed while it saved
    if spec.backup_dir:
        remove_stale_backup(spec.backup_dir)  # of a run killed while it deleted its backup
    finished = finished_run_record(spec, config)
    if finished is not None:
        from coophash_keras.io import load_model

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
        check_backup_dir(spec.backup_dir, model)
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
    ds = training_dataset(run.model_class, config, data, split, spec.seed, repeat=spec.steps_per_epoch is not None)
    where = f" ({run.strategy.num_replicas_in_sync} replicas)" if run.strategy is not None else ""
    print(
        f"training {run.model_class.__name__} on {data.name}: {len(split.train)} labeled images, "
        f"{config.num_bits} bits, {spec.epochs} epochs -> {spec.run_dir}{where}",
        flush=True,
    )
    if resuming:
        print(f"resuming from {spec.backup_dir} after epoch {backup.restored_state['epoch']}", flush=True)
    start = time.time()
    model.fit(ds, epochs=spec.epochs, steps_per_epoch=spec.steps_per_epoch, verbose=spec.verbose, callbacks=callbacks)
    seconds = time.time() - start
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


def load_run(run_dir: str) -> dict:
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.exists(path):
        raise RunError(f"{run_dir} is not a run directory (no {RUN_FILE}); train one with `coophash train`")
    with open(path) as fh:
        return json.load(fh)


def load_run_data(run: dict):
    """The dataset a run was trained on (`run` from load_run), decoded as it was then: file-based
    data (folder:/csv:/images:) gets the recorded image size and channels and must still hold the
    same files and labels, since split.npz indexes into it."""
    from coophash_keras.data import load_dataset
    from coophash_keras.data.files import check_dataset_record

    data = load_dataset(
        run["dataset"], run.get("data_dir"), image_size=run.get("image_size"), channels=run.get("channels")
    )
    check_dataset_record(run, data)
    return data


def model_path(path: str) -> str:
    """A run directory or a .keras file -> the .keras file."""
    return os.path.join(path, "model.keras") if os.path.isdir(path) else path


def evaluate_run(run_dir: str, topk=(100, 1000), output=None, verbose=0) -> dict:
    """Retrieval metrics of a run's model on its own query/database split, written to metrics.json."""
    import numpy as np

    from coophash_keras.data import RetrievalSplit
    from coophash_keras.io import load_model
    from coophash_keras.metrics import retrieval_metrics

    run = load_run(run_dir)
    model = load_model(model_path(run_dir))
    data = load_run_data(run)
    split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
    start = time.time()
    query = model.encode(data.images[split.query], verbose=verbose)
    database = model.encode(data.images[split.database], verbose=verbose)
    metrics = retrieval_metrics(
        query, data.labels[split.query], database, data.labels[split.database], topk=topk, radius=2
    )
    metrics.update(
        num_query=int(len(split.query)),
        num_database=int(len(split.database)),
        num_bits=int(query.shape[1]),
        bit_balance=float(1 - np.abs(database.mean(0)).mean()),
        evaluate_seconds=time.time() - start,
    )
    atomic_write_json(output or os.path.join(run_dir, "metrics.json"), metrics)
    return metrics
