"""Reading a finished run back: its run.json, its data decoded as at training time, and the
retrieval metrics of its model on its own query/database split (`evaluate_run`); and the smaller
query/database sets that validation during training and tuning scores (`validation_sets`)."""

import json
import os
import time

import numpy as np

from coophash_keras.data import RetrievalSplit, load_dataset, retrieval_split
from coophash_keras.data.files import check_dataset_record
from coophash_keras.encoding import Progress, encode_set
from coophash_keras.io import atomic_write_json, load_model
from coophash_keras.metrics import retrieval_metrics
from coophash_keras.run_spec import RUN_FILE, RunError, RunSpec


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
    database is subsampled to `max_database` so that validation stays cheap. The images of a file
    set are ImageSets of its rows (streamed by the callback), of the others arrays."""
    database = split.database
    if len(database) > max_database:
        database = np.sort(np.random.default_rng(seed).choice(database, max_database, replace=False))
    query, base = data.subset(split.query), data.subset(database)
    if data.streamed:
        return query, query.labels, base, base.labels
    return query.images, query.labels, base.images, base.labels


def _data_at_model_shape(name, data_dir, config):
    """A data set decoded at the model's input shape (image files resized to it; other data sets
    must have it)."""
    from coophash_keras.data.files import is_file_dataset

    h, w, c = config["image_shape"]
    if is_file_dataset(name):
        return load_dataset(name, data_dir, image_size=(h, w), channels=c)
    data = load_dataset(name, data_dir)
    if tuple(data.image_shape) != (h, w, c):
        raise RunError(f"{name} has {'x'.join(map(str, data.image_shape))} images, the model takes {h}x{w}x{c}")
    return data


def _labels_like(data, reference, what):
    """`data`'s labels in the label space of `reference` (the queries'): an unlabelled set
    (images:PATH) gets labels that are never relevant (-1, or all-zero multi-hot rows); a labelled
    one must have the same classes."""
    if data.num_classes == 0:
        if reference.multi_label:
            return np.zeros((len(data), reference.num_classes), np.float32)
        return np.full(len(data), -1, np.int64)
    if data.multi_label != reference.multi_label or data.num_classes != reference.num_classes:
        raise RunError(
            f"{what} {data.name} has other labels than the queries ({data.num_classes} vs {reference.num_classes} classes)"
        )
    if data.class_names and reference.class_names and list(data.class_names) != list(reference.class_names):
        raise RunError(
            f"{what} {data.name} names other classes than the queries ({list(data.class_names)[:5]} vs "
            f"{list(reference.class_names)[:5]}): class ids would not match"
        )
    return data.labels


def evaluate_run(
    run_dir: str,
    topk=(100, 1000),
    output=None,
    verbose=0,
    queries=None,
    query_per_class=None,
    database=(),
    data_dir=None,
) -> dict:
    """Retrieval metrics of a run's model, written to metrics.json. By default on the run's own
    split (its queries against its database). `database`: data set names whose images join the
    database (an unlabelled one, e.g. the `--unlabeled` pool as images:PATH, counts as never
    relevant). `queries`: a labelled data set to take the queries from instead: with
    `query_per_class` N, N per class (seeded by the run's seed) are the queries and the rest of it
    joins the database; without, all of it are queries. A label-free run fitted on unlabelled
    images has no queries of its own: it needs `queries`."""
    run = load_run(run_dir)
    model = load_model(model_path(run_dir))
    config = model.config.to_dict()
    names = [queries] if queries else []
    if queries:
        qdata = _data_at_model_shape(queries, data_dir, config)
        if qdata.num_classes == 0:
            raise RunError(f"--queries {queries} has no labels: queries need labels to be scored")
        if query_per_class:
            qsplit = retrieval_split(qdata.labels, query_per_class, seed=int(run.get("seed", 0)))
            q_idx, rest = qsplit.query, qsplit.database
        else:
            q_idx, rest = np.arange(len(qdata)), np.zeros(0, np.int64)
        reference = qdata
        q_part = qdata.subset(q_idx)
        db_parts = [(qdata.subset(rest), qdata.labels[rest])] if len(rest) else []
    else:
        data = load_run_data(run)
        split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
        if len(split.query) == 0:
            raise RunError(
                f"{run_dir} was fitted on unlabelled images ({run['dataset']}): it has no queries to score; "
                "pass a labelled data set: --queries DATASET --query-per-class N (and --database DATASET)"
            )
        names = [run["dataset"]]
        reference = data
        q_part = data.subset(split.query)
        db_parts = [(data.subset(split.database), data.labels[split.database])]
    for name in database or ():
        extra = _data_at_model_shape(name, data_dir, config)
        db_parts.append((extra, _labels_like(extra, reference, "--database")))
        names.append(name)
    if not db_parts:
        raise RunError("no database: pass --database DATASET (or --query-per-class, so the rest of --queries is one)")
    start = time.time()
    progress = Progress(len(q_part) + sum(len(p) for p, _ in db_parts), verbose) if verbose else None
    query, rows = encode_set(model, q_part, progress=progress)  # streamed: only codes are held
    q_lab = q_part.labels[rows]
    db_codes, db_labels = [], []
    for part, labels in db_parts:
        codes, rows = encode_set(model, part, progress=progress)
        db_codes.append(codes)
        db_labels.append(labels[rows])
    db_codes, db_labels = np.concatenate(db_codes), np.concatenate(db_labels)
    metrics = retrieval_metrics(query, q_lab, db_codes, db_labels, topk=topk, radius=2)
    metrics.update(
        num_query=int(len(query)),
        num_database=int(len(db_codes)),
        num_database_unlabelled=int(np.sum(db_labels < 0) if db_labels.ndim == 1 else np.sum(db_labels.sum(1) == 0)),
        data_sets=names,
        num_bits=int(query.shape[1]),
        bit_balance=float(1 - np.abs(db_codes.mean(0)).mean()),
        evaluate_seconds=time.time() - start,
    )
    atomic_write_json(output or os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def finished_run_record(spec: RunSpec, config, pool=None) -> dict | None:
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
    if record.get("unlabeled_data") != (pool.record() if pool is not None else None):
        return None  # another pool under the same name: train again
    return record if saved_config == json.loads(json.dumps(config.to_dict())) else None
