"""`coophash` command line: train, evaluate, encode, demo."""

import argparse
import json
import os
import sys
import time


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _parse_value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(pairs):
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = _parse_value(value)
    return out


def _load_run(run_dir):
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        raise CLIError(f"{run_dir} is not a run directory (no run.json); train one with `coophash train`")
    with open(path) as fh:
        return json.load(fh)


def _strategy(args):
    """None (default device), MultiWorkerMirroredStrategy (--workers / TF_CONFIG) or Mirrored
    over the local GPUs (--mirrored)."""
    import tensorflow as tf

    if getattr(args, "workers", None):
        workers = [w.strip() for w in args.workers.split(",") if w.strip()]
        if args.task_index is None or not 0 <= args.task_index < len(workers):
            raise CLIError(f"--task-index must be in [0, {len(workers) - 1}] for {len(workers)} workers")
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": args.task_index}}
        )
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if getattr(args, "mirrored", False):
        return tf.distribute.MirroredStrategy()
    return None


def _is_chief(strategy):
    if strategy is None or not os.environ.get("TF_CONFIG"):
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    return task.get("type") in ("chief", None) or (task.get("type") == "worker" and task.get("index", 0) == 0)


def _validation_sets(data, split, max_database=5000, seed=0):
    import numpy as np

    database = split.database
    if len(database) > max_database:
        database = np.sort(np.random.default_rng(seed).choice(database, max_database, replace=False))
    return (data.images[split.query], data.labels[split.query], data.images[database], data.labels[database])


def _model_class(name):
    from coophash_keras import CoopHash
    from coophash_keras.baselines import DSHGAN, SupervisedHashNet

    return {"coophash": CoopHash, "dshgan": DSHGAN, "plain": SupervisedHashNet}[name]


def cmd_train(args):
    import contextlib

    import keras

    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.callbacks import CoopHashTensorBoard, ProgressLog, RetrievalMetricsCallback, check_backup_dir
    from coophash_keras.data import load_dataset, retrieval_split
    from coophash_keras.io import save_model

    strategy = _strategy(args)  # first: a multi-worker strategy must exist before any TF op runs
    if getattr(args, "mixed_precision", False):
        keras.mixed_precision.set_global_policy("mixed_float16")
    data = load_dataset(args.dataset, args.data_dir)
    split = retrieval_split(data.labels, args.query_per_class, args.labels_per_class, seed=args.seed)
    overrides = _overrides(args.set)
    config = CoopHashConfig.from_dict(
        dict(
            dict(
                image_shape=data.image_shape,
                num_classes=data.num_classes,
                multi_label=data.multi_label,
                num_bits=args.bits,
                batch_size=args.batch_size,
                seed=args.seed,
            ),
            **overrides,
        )
    )
    model_name = getattr(args, "model", "coophash")
    if getattr(args, "ablation", None):
        if model_name != "coophash":
            raise CLIError("--ablation applies to --model coophash only")
        config = config.with_ablation(args.ablation)
    model_class = _model_class(model_name)
    os.makedirs(args.run_dir, exist_ok=True)
    train = data.subset(split.train)
    if len(train) < config.batch_size:
        raise CLIError(f"only {len(train)} labeled training images, fewer than one batch of {config.batch_size}")
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model = model_class(config)
        model.compile()

    callbacks = []
    val_every = getattr(args, "val_every", 0) or 0
    val = _validation_sets(data, split) if val_every else None
    if val is not None:  # first, so TensorBoard, ModelCheckpoint and the tuner see val_map
        callbacks.append(RetrievalMetricsCallback(*val, every_n_epochs=val_every, topk=(100,)))
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                os.path.join(args.run_dir, "best.keras"), monitor="val_map", mode="max", save_best_only=True
            )
        )
    if getattr(args, "tensorboard", None) and model_class is CoopHash:
        sample = data.subset(split.query[:256])
        projector = data.subset(split.database[:1000])
        callbacks.append(
            CoopHashTensorBoard(
                args.tensorboard,
                sample.images,
                sample.labels,
                projector_images=projector.images,
                projector_labels=projector.labels,
                class_names=data.class_names,
            )
        )
    if getattr(args, "tensorboard", None):
        callbacks.append(keras.callbacks.TensorBoard(args.tensorboard, histogram_freq=0))
    if getattr(args, "backup_dir", None):
        check_backup_dir(args.backup_dir, model)
        callbacks.append(keras.callbacks.BackupAndRestore(args.backup_dir))
    callbacks.append(ProgressLog(os.path.join(args.run_dir, "progress.jsonl")))

    train_ds = train.as_dataset(config.batch_size, shuffle=True, seed=args.seed, drop_remainder=True)
    if model_name == "dshgan" and len(split.unlabeled) >= config.batch_size:
        from coophash_keras.data import with_unlabeled

        train_ds = with_unlabeled(train_ds, data.images[split.unlabeled], config.batch_size, args.seed)
    print(
        f"training {model_class.__name__} on {data.name}: {len(train)} labeled images, {config.num_bits} bits, "
        f"{args.epochs} epochs -> {args.run_dir}"
        + (f" ({strategy.num_replicas_in_sync} replicas)" if strategy is not None else ""),
        flush=True,
    )
    start = time.time()
    history = model.fit(train_ds, epochs=args.epochs, verbose=args.verbose, callbacks=callbacks)
    seconds = time.time() - start
    if not _is_chief(strategy):
        print(f"worker done in {seconds:.1f}s (the chief saves the model)")
        return model
    save_model(model, os.path.join(args.run_dir, "model.keras"))
    config.to_json(os.path.join(args.run_dir, "config.json"))
    split.save(os.path.join(args.run_dir, "split.npz"))
    with open(os.path.join(args.run_dir, "history.json"), "w") as fh:
        json.dump({k: [float(v) for v in vals] for k, vals in history.history.items()}, fh, indent=2)
    with open(os.path.join(args.run_dir, "run.json"), "w") as fh:
        json.dump(
            {
                "dataset": args.dataset,
                "data_dir": args.data_dir,
                "query_per_class": args.query_per_class,
                "labels_per_class": args.labels_per_class,
                "seed": args.seed,
                "epochs": args.epochs,
                "train_seconds": seconds,
            },
            fh,
            indent=2,
        )
    print(f"trained in {seconds:.1f}s; model: {os.path.join(args.run_dir, 'model.keras')}")
    return model


def cmd_tune(args):
    from coophash_keras import CoopHashConfig
    from coophash_keras.callbacks import RetrievalMetricsCallback
    from coophash_keras.data import load_dataset, retrieval_split
    from coophash_keras.tuning import SEARCH_SPACE, make_tuner

    strategy = _strategy(args)
    data = load_dataset(args.dataset, args.data_dir)
    split = retrieval_split(data.labels, args.query_per_class, args.labels_per_class, seed=args.seed)
    base = CoopHashConfig.from_dict(
        dict(
            dict(
                image_shape=data.image_shape,
                num_classes=data.num_classes,
                multi_label=data.multi_label,
                num_bits=args.bits,
                batch_size=args.batch_size,
                seed=args.seed,
            ),
            **_overrides(args.set),
        )
    )
    tune = args.tune.split(",") if args.tune else list(SEARCH_SPACE)
    tuner = make_tuner(
        base,
        os.path.join(args.run_dir, "tuner"),
        max_trials=args.trials,
        tune=tune,
        seed=args.seed,
        distribution_strategy=strategy,
        overwrite=args.overwrite,
    )
    train = data.subset(split.train).as_dataset(base.batch_size, shuffle=True, seed=args.seed, drop_remainder=True)
    tuner.search(
        train,
        epochs=args.epochs,
        verbose=args.verbose,
        callbacks=[RetrievalMetricsCallback(*_validation_sets(data, split), every_n_epochs=1)],
    )
    best = tuner.oracle.get_best_trials(1)[0]
    best_config = CoopHashConfig.from_dict(dict(base.to_dict(), **{k: best.hyperparameters.get(k) for k in tune}))
    best_config.to_json(os.path.join(args.run_dir, "best_config.json"))
    summary = {
        "best_val_map": best.score,
        "trials": len(tuner.oracle.trials),
        "best_hyperparameters": {k: best.hyperparameters.get(k) for k in tune},
    }
    with open(os.path.join(args.run_dir, "tuning.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    print(f"best val_map {best.score:.4f} after {summary['trials']} trials: {summary['best_hyperparameters']}")
    print(f"best config: {os.path.join(args.run_dir, 'best_config.json')} (train it: coophash train --set ...)")
    return summary


def cmd_evaluate(args):
    import numpy as np

    from coophash_keras.data import RetrievalSplit, load_dataset
    from coophash_keras.io import load_model
    from coophash_keras.metrics import retrieval_metrics

    run = _load_run(args.run_dir)
    model = load_model(os.path.join(args.run_dir, "model.keras"))
    data = load_dataset(run["dataset"], run.get("data_dir"))
    split = RetrievalSplit.load(os.path.join(args.run_dir, "split.npz"))
    start = time.time()
    query = model.encode(data.images[split.query], verbose=args.verbose)
    database = model.encode(data.images[split.database], verbose=args.verbose)
    metrics = retrieval_metrics(
        query, data.labels[split.query], database, data.labels[split.database], topk=args.topk, radius=2
    )
    metrics.update(
        num_query=int(len(split.query)),
        num_database=int(len(split.database)),
        num_bits=int(query.shape[1]),
        bit_balance=float(1 - np.abs(database.mean(0)).mean()),
        evaluate_seconds=time.time() - start,
    )
    out = args.output or os.path.join(args.run_dir, "metrics.json")
    with open(out, "w") as fh:
        json.dump(metrics, fh, indent=2)
    summary = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("mAP", "P@")) and "exclude" not in k}
    print(f"{run['dataset']}: {len(split.query)} queries vs {len(split.database)} database images: {summary}")
    print(f"metrics: {out}")
    return metrics


def _read_images(paths, image_shape):
    import numpy as np
    from PIL import Image

    out, names = [], []
    h, w, c = image_shape
    for path in paths:
        if not os.path.exists(path):
            raise CLIError(f"missing image file {path}")
        if path.endswith(".npy"):
            arr = np.load(path)
            batch = arr if arr.ndim == 4 else [arr]
            out.extend(batch)
            names.extend(f"{path}[{i}]" for i in range(len(batch)))
            continue
        try:
            img = Image.open(path)
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
        except Exception as exc:
            raise CLIError(f"{path} is not a readable image: {exc}") from None
        arr = np.asarray(img, dtype=np.uint8)
        out.append(arr[..., None] if c == 1 else arr)
        names.append(path)
    return np.stack(out), names


def cmd_encode(args):
    import numpy as np

    from coophash_keras.io import load_model

    model = load_model(os.path.join(args.run_dir, "model.keras") if os.path.isdir(args.run_dir) else args.run_dir)
    images, names = _read_images(args.images, model.config.image_shape)
    codes = model.encode(images, packed=args.packed)
    if args.output:
        np.save(args.output, codes)
        print(f"wrote {codes.shape} {codes.dtype} codes to {args.output}")
    for path, code in zip(names, codes):
        text = code.tobytes().hex() if args.packed else "".join("1" if b > 0 else "0" for b in code)
        print(f"{path}\t{text}")
    return codes


def cmd_export(args):
    import numpy as np

    from export import export_saved_model

    database_images = database_ids = None
    if args.database:
        from coophash_keras.data import RetrievalSplit, load_dataset

        run_dir = args.database
        run = _load_run(run_dir)
        data = load_dataset(run["dataset"], run.get("data_dir"))
        split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
        database_images, database_ids = data.images[split.database], split.database.astype(np.int64)
    path = export_saved_model(
        args.model, args.base, args.name, args.version, database_images, database_ids, args.search_k
    )
    sigs = "serving_default, hash_image_bytes" + (", search" if args.database else "")
    print(f"exported {args.model} -> {path} (signatures: {sigs})")
    return path


def cmd_serve(args):
    import logging

    from serving.server import ModelServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    indexes = {}
    for item in args.index or []:
        if "=" not in item:
            raise CLIError(f"--index expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        indexes[name] = path
    server = ModelServer(
        args.model_base, args.host, args.port, args.grpc_port, args.poll_interval, args.max_body_bytes, indexes
    )
    if not server.registry.names():
        raise CLIError(f"no model found under {args.model_base} (expected <base>/<name>/<version>/saved_model.pb)")
    server.serve_forever()


def cmd_query(args):
    from serving.client import GrpcClient, RestClient, ServingClientError

    blobs = []
    for path in args.images:
        if not os.path.exists(path):
            raise CLIError(f"missing image file {path}")
        with open(path, "rb") as fh:
            blobs.append(fh.read())
    if args.grpc and args.search:
        raise CLIError("--search needs decoded images; use the REST --url form")
    try:
        if args.grpc:
            out = GrpcClient(args.grpc, args.model, args.version).predict({"image_bytes": blobs}, "hash_image_bytes")
        else:
            client = RestClient(args.url, args.model, args.version)
            out = client.hash_image_files(blobs)
            if args.search:
                images = _read_images(args.images, _served_image_shape(client))[0]
                found = client.predict({"signature_name": "search", "inputs": {"images": images.tolist()}})["outputs"]
                out.update(ids=found["ids"], distances=found["distances"])
    except ServingClientError as exc:
        raise CLIError(f"server answered {exc}") from None
    except OSError as exc:
        raise CLIError(f"cannot reach the server: {exc}") from None
    for i, path in enumerate(args.images):
        code = "".join("1" if b > 0 else "0" for b in out["codes"][i])
        line = f"{path}\tcode={code}\tenergy={float(out['energy'][i]):.3f}"
        if "ids" in out:
            line += f"\ttop_ids={list(map(int, out['ids'][i]))}\tdistances={list(map(int, out['distances'][i]))}"
        print(line)
    return out


def _served_image_shape(client):
    """Image shape (H, W, C) of a served model, read from its metadata."""
    sig = client.metadata()["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = sig["inputs"]["images"]["tensor_shape"]["dim"]
    return tuple(int(d["size"]) for d in dims[1:])


def _model_file(path):
    return os.path.join(path, "model.keras") if os.path.isdir(path) else path


def cmd_index_build(args):
    import numpy as np

    from coophash_keras.data import RetrievalSplit, load_dataset
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint

    model_path = _model_file(args.model)
    model = load_model(model_path)
    data = load_dataset(args.dataset, args.data_dir)
    ids = np.arange(len(data))
    if args.split:
        split = RetrievalSplit.load(os.path.join(args.model, "split.npz"))
        ids = getattr(split, args.split)
    start = time.time()
    codes = model.encode(data.images[ids], packed=True, verbose=1 if len(ids) > 10000 else 0)
    index = HammingIndex(model.config.num_bits, model_fingerprint(model_path))
    index.add(codes, ids)
    if os.path.exists(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} exists; pass --overwrite to replace it")
    index.save(args.out)
    print(
        f"indexed {len(index)} codes ({model.config.num_bits} bits, model {index.model_version}) in "
        f"{time.time() - start:.1f}s -> {args.out}"
    )


def cmd_index_search(args):
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint

    model_path = _model_file(args.model)
    index = HammingIndex.load(args.index, expected_model_version=model_fingerprint(model_path))
    model = load_model(model_path)
    images, names = _read_images(args.images, model.config.image_shape)
    ids, distances = index.search(model.encode(images, packed=True), args.k)
    for name, i, d in zip(names, ids, distances):
        print(f"{name}\tids={i.tolist()}\tdistances={d.tolist()}")
    return ids, distances


def cmd_demo(args):
    """Train on digits with the demo settings, evaluate and print where everything is."""
    start = time.time()
    train_args = argparse.Namespace(
        dataset="digits",
        data_dir=None,
        bits=32,
        epochs=args.epochs,
        batch_size=64,
        query_per_class=20,
        labels_per_class=None,
        seed=0,
        run_dir=args.run_dir,
        verbose=2,
        set=[],
    )
    cmd_train(train_args)
    metrics = cmd_evaluate(argparse.Namespace(run_dir=args.run_dir, topk=[100], output=None, verbose=0))
    served = _demo_export_and_query(args.run_dir)
    print(f"\n{served}")
    print(
        f"\ndemo done in {time.time() - start:.0f}s: mAP@all = {metrics['mAP@all']:.4f} at 32 bits "
        f"(query 20/class, database = the other digits); model at {os.path.join(args.run_dir, 'model.keras')}"
    )


def _demo_export_and_query(run_dir):
    """Export the demo model with its database, serve it on a free loopback port, and query it over
    REST with PNG files of three query digits (as a user would with curl)."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image

    from coophash_keras.data import RetrievalSplit, load_digits
    from serving.server import ModelServer

    base = os.path.join(run_dir, "models")
    shutil.rmtree(base, ignore_errors=True)
    cmd_export(
        argparse.Namespace(
            model=os.path.join(run_dir, "model.keras"),
            base=base,
            name="coophash",
            version=None,
            database=run_dir,
            search_k=5,
        )
    )
    data = load_digits()
    split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
    tmp = tempfile.mkdtemp()
    paths = []
    for i in split.query[:3]:
        paths.append(os.path.join(tmp, f"query_{i}_label{data.labels[i]}.png"))
        Image.fromarray(data.images[i][..., 0]).save(paths[-1])
    with ModelServer(base, port=0, grpc_port=None) as server:
        print(f"serving {base} at {server.url} (TF-Serving REST API); querying 3 digits:")
        out = cmd_query(
            argparse.Namespace(images=paths, url=server.url, grpc=None, model="coophash", version=None, search=True)
        )
    shutil.rmtree(tmp, ignore_errors=True)
    hits = [np.mean(data.labels[np.asarray(ids)] == data.labels[i]) for i, ids in zip(split.query[:3], out["ids"])]
    return (
        f"served query: top-5 neighbours share the query's label in {100 * np.mean(hits):.0f}% of cases; "
        f"SavedModel at {os.path.join(base, 'coophash', '1')}"
    )


def build_parser():
    p = argparse.ArgumentParser(prog="coophash", description="CoopHash deep image hashing (Keras 3)")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train CoopHash and save a run directory")
    t.add_argument("--dataset", default="digits", help="digits | fashion_mnist | npz:PATH | tfds:NAME")
    t.add_argument("--data-dir", default=None, help="directory of the dataset files (fashion_mnist, tfds)")
    t.add_argument("--bits", type=int, default=32, help="K, a multiple of 8")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--query-per-class", type=int, default=20)
    t.add_argument(
        "--labels-per-class",
        type=int,
        default=None,
        help="labeled training images per class (default: all non-query images)",
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--run-dir", required=True)
    t.add_argument(
        "--model",
        choices=["coophash", "dshgan", "plain"],
        default="coophash",
        help="CoopHash, or a baseline: DSH-GAN (semi-supervised: uses the non-labeled training "
        "images) or plain supervised hashing (cannot be exported: no energy head)",
    )
    t.add_argument(
        "--ablation",
        choices=["no_generator_pairs", "no_energy_head", "no_inference_head"],
        default=None,
        help="switch one CoopHash component off (docs/RESULTS.md)",
    )
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a CoopHashConfig field")
    t.add_argument("--verbose", type=int, default=1, help="Keras verbosity: 0 silent, 1 progress bar, 2 per epoch")
    t.add_argument(
        "--val-every",
        type=int,
        default=0,
        metavar="N",
        help="validation mAP (val_map) every N epochs; keeps RUN/best.keras (best val_map)",
    )
    t.add_argument("--tensorboard", default=None, metavar="DIR", help="write TensorBoard logs to DIR")
    t.add_argument(
        "--backup-dir",
        default=None,
        metavar="DIR",
        help="preemption-safe: back up every epoch and resume from DIR when re-run",
    )
    t.add_argument(
        "--mixed-precision",
        action="store_true",
        help="mixed_float16 (GPUs); Langevin revision, energies and losses stay float32",
    )
    t.add_argument(
        "--workers",
        default=None,
        metavar="HOST:PORT,...",
        help="MultiWorkerMirroredStrategy over these workers (or set TF_CONFIG yourself)",
    )
    t.add_argument("--task-index", type=int, default=None, help="this worker's index in --workers (0 = chief)")
    t.add_argument("--mirrored", action="store_true", help="MirroredStrategy over this machine's GPUs")
    t.set_defaults(func=cmd_train)

    tu = sub.add_parser("tune", help="keras-tuner random search, objective: validation mAP")
    tu.add_argument("--dataset", default="digits")
    tu.add_argument("--data-dir", default=None)
    tu.add_argument("--bits", type=int, default=32)
    tu.add_argument("--epochs", type=int, default=5, help="epochs per trial")
    tu.add_argument("--trials", type=int, default=10, help="trial budget")
    tu.add_argument("--batch-size", type=int, default=64)
    tu.add_argument("--query-per-class", type=int, default=20)
    tu.add_argument("--labels-per-class", type=int, default=None)
    tu.add_argument("--seed", type=int, default=0)
    tu.add_argument("--tune", default=None, help="comma-separated fields to tune (default: all tunable)")
    tu.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed CoopHashConfig overrides")
    tu.add_argument("--run-dir", required=True)
    tu.add_argument("--overwrite", action="store_true", help="start the search over instead of resuming it")
    tu.add_argument("--workers", default=None)
    tu.add_argument("--task-index", type=int, default=None)
    tu.add_argument("--mirrored", action="store_true")
    tu.add_argument("--verbose", type=int, default=0)
    tu.set_defaults(func=cmd_tune)

    e = sub.add_parser("evaluate", help="retrieval metrics of a run on its query/database split")
    e.add_argument("--run-dir", required=True)
    e.add_argument("--topk", type=int, nargs="*", default=[100, 1000])
    e.add_argument("--output", default=None, help="metrics JSON path (default RUN/metrics.json)")
    e.add_argument("--verbose", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("encode", help="print binary codes of images (PNG/JPEG files or .npy arrays)")
    c.add_argument("--run-dir", required=True, help="run directory or model.keras path")
    c.add_argument("images", nargs="+")
    c.add_argument("--packed", action="store_true", help="print packed bytes as hex")
    c.add_argument("--output", default=None, help="also save the codes to this .npy file")
    c.set_defaults(func=cmd_encode)

    ix = sub.add_parser("index", help="build or query a persisted HammingIndex")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    b = ixs.add_parser("build", help="encode a dataset with a model and save a HammingIndex")
    b.add_argument("--model", required=True, help="run directory or model.keras")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--data-dir", default=None)
    b.add_argument(
        "--split",
        choices=["database", "query", "train", "unlabeled"],
        default=None,
        help="index only this split of the run (ids = dataset indices); default: every image",
    )
    b.add_argument("--out", required=True)
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=cmd_index_build)
    se = ixs.add_parser("search", help="top-k neighbours of image files")
    se.add_argument("--index", required=True)
    se.add_argument("--model", required=True, help="run directory or model.keras (must be the index's model)")
    se.add_argument("--k", type=int, default=10)
    se.add_argument("images", nargs="+")
    se.set_defaults(func=cmd_index_search)

    x = sub.add_parser("export", help="write a TF-Serving SavedModel <base>/<name>/<version>/")
    x.add_argument("--model", required=True, help="RUN/model.keras")
    x.add_argument("--base", required=True, help="model base directory (e.g. models)")
    x.add_argument("--name", default="coophash")
    x.add_argument("--version", type=int, default=None, help="default: next free integer")
    x.add_argument(
        "--database",
        default=None,
        metavar="RUN",
        help="embed the packed codes of this run's database split and add the `search` signature",
    )
    x.add_argument("--search-k", type=int, default=10, help="results per query of the search signature")
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="serve a model base path with the TF-Serving REST and gRPC APIs")
    s.add_argument("--model-base", required=True)
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=int, default=8501, help="REST port")
    s.add_argument("--grpc-port", type=int, default=8500)
    s.add_argument("--poll-interval", type=float, default=1.0, help="seconds between scans for new versions")
    s.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024)
    s.add_argument(
        "--index",
        action="append",
        metavar="NAME=PATH",
        help="serve POST /v1/models/NAME:search from this HammingIndex file",
    )
    s.set_defaults(func=cmd_serve)

    q = sub.add_parser("query", help="send image files to a served model and print their codes")
    q.add_argument("images", nargs="+")
    q.add_argument("--url", default="http://127.0.0.1:8501", help="REST endpoint")
    q.add_argument("--grpc", default=None, metavar="HOST:PORT", help="use gRPC instead of REST")
    q.add_argument("--model", default="coophash")
    q.add_argument("--version", type=int, default=None)
    q.add_argument("--search", action="store_true", help="also print top-k ids (needs the search signature)")
    q.set_defaults(func=cmd_query)

    d = sub.add_parser("demo", help="train on digits, evaluate, print mAP and where the model is")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument("--epochs", type=int, default=20)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    if os.environ.get("COOPHASH_DEBUG"):
        import keras

        keras.config.disable_traceback_filtering()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as exc:
        if os.environ.get("COOPHASH_DEBUG"):
            raise
        print(f"coophash {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
