"""`coophash demo`: train on digits, evaluate, export with the database, serve, answer a REST query."""

import os
import time

from coophash_keras.cli.common import positive_int


def add_parser(sub):
    d = sub.add_parser("demo", help="train on digits, evaluate, export, serve and query; print mAP")
    d.add_argument("--run-dir", default="runs/demo")
    d.add_argument("--epochs", type=positive_int, default=20)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--deterministic", action="store_true", help="op determinism: the same command gives the same codes")
    d.set_defaults(func=run)


def run(args):
    from coophash_keras.runs import RunSpec, evaluate_run, train_run

    start = time.time()
    spec = RunSpec(
        run_dir=args.run_dir,
        dataset="digits",
        bits=32,
        epochs=args.epochs,
        seed=args.seed,
        deterministic=args.deterministic,
        verbose=2,
    )
    train_run(spec)
    metrics = evaluate_run(args.run_dir, topk=(100,))
    print(f"\n{export_serve_and_query(args.run_dir)}")
    print(
        f"\ndemo done in {time.time() - start:.0f}s: mAP@all = {metrics['mAP@all']:.4f} at 32 bits "
        f"(query 20/class, database = the other digits); model at {os.path.join(args.run_dir, 'model.keras')}"
    )


def export_serve_and_query(run_dir):
    """Export the demo model with its database, serve it on a free loopback port, and query it over
    REST with PNG files of three query digits (as a user would with curl)."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image

    from coophash_keras.cli.query import query
    from coophash_keras.data import RetrievalSplit, load_digits
    from coophash_keras.export import export_saved_model
    from coophash_keras.serving.server import ModelServer

    base = os.path.join(run_dir, "models")
    shutil.rmtree(base, ignore_errors=True)
    data = load_digits()
    split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
    export_saved_model(
        os.path.join(run_dir, "model.keras"),
        base,
        "coophash",
        database_images=data.images[split.database],
        database_ids=split.database,
        search_k=5,
        ood_images=data.images[split.query],  # held out of training: they set in_distribution's threshold
    )
    tmp = tempfile.mkdtemp()
    paths = []
    for i in split.query[:3]:
        paths.append(os.path.join(tmp, f"query_{i}_label{data.labels[i]}.png"))
        Image.fromarray(data.images[i][..., 0]).save(paths[-1])
    with ModelServer(base, port=0, grpc_port=None) as server:
        print(f"serving {base} at {server.url} (TF-Serving REST API); querying 3 digits:")
        out = query(paths, url=server.url, search=True)
        for path, ids, dist in zip(paths, out["ids"], out["distances"]):
            print(f"  {os.path.basename(path)}: top-5 ids {list(map(int, ids))}, distances {list(map(int, dist))}")
    shutil.rmtree(tmp, ignore_errors=True)
    hits = [np.mean(data.labels[np.asarray(ids)] == data.labels[i]) for i, ids in zip(split.query[:3], out["ids"])]
    return (
        f"served query: top-5 neighbours share the query's label in {100 * np.mean(hits):.0f}% of cases; "
        f"SavedModel at {os.path.join(base, 'coophash', '1')}"
    )
