"""Reading a finished run back: its run.json, its data decoded as at training time, and the
retrieval metrics of its model on its own query/database split (`evaluate_run`); and the smaller
query/database sets that validation during training and tuning scores (`validation_sets`)."""

import json
import os
import time

import numpy as np

from coophash_keras.data import RetrievalSplit, load_dataset
from coophash_keras.data.files import check_dataset_record
from coophash_keras.io import atomic_write_json, load_model
from coophash_keras.metrics import retrieval_metrics
from coophash_keras.run_spec import RUN_FILE, RunError


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
    data = load_dataset(
        run["dataset"], run.get("data_dir"), image_size=run.get("image_size"), channels=run.get("channels")
    )
    check_dataset_record(run, data)
    return data


def model_path(path: str) -> str:
    """A run directory or a .keras file -> the .keras file."""
    return os.path.join(path, "model.keras") if os.path.isdir(path) else path


def validation_sets(data, split, max_database=5000, seed=0):
    """(query images, query labels, database images, database labels) for validation mAP; the
    database is subsampled to `max_database` so that validation stays cheap."""
    database = split.database
    if len(database) > max_database:
        database = np.sort(np.random.default_rng(seed).choice(database, max_database, replace=False))
    return data.images[split.query], data.labels[split.query], data.images[database], data.labels[database]


def evaluate_run(run_dir: str, topk=(100, 1000), output=None, verbose=0) -> dict:
    """Retrieval metrics of a run's model on its own query/database split, written to metrics.json."""
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
