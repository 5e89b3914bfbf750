"""`coophash export`: a TF-Serving SavedModel <base>/<name>/<version>/ (export/ holds the contract)."""

from coophash_keras.cli.common import positive_int


def add_parser(sub):
    x = sub.add_parser("export", help="write a TF-Serving SavedModel <base>/<name>/<version>/")
    x.add_argument("--model", required=True, help="run directory or model.keras")
    x.add_argument("--base", required=True, help="model base directory (e.g. models)")
    x.add_argument("--name", default="coophash")
    x.add_argument("--version", type=positive_int, default=None, help="default: next free integer")
    x.add_argument(
        "--database",
        default=None,
        metavar="RUN",
        help="embed the packed codes of this run's database split and add the `search` signature",
    )
    x.add_argument("--search-k", type=positive_int, default=10, help="results per query of the search signature")
    x.set_defaults(func=run)


def run(args):
    import numpy as np

    from coophash_keras.evaluation import model_path
    from coophash_keras.export import export_saved_model

    database_images = database_ids = None
    if args.database:
        from coophash_keras.data import RetrievalSplit
        from coophash_keras.evaluation import load_run, load_run_data

        data = load_run_data(load_run(args.database))
        split = RetrievalSplit.load(f"{args.database}/split.npz")
        database_images, database_ids = data.pixels(split.database), split.database.astype(np.int64)
    path = export_saved_model(
        model_path(args.model), args.base, args.name, args.version, database_images, database_ids, args.search_k
    )
    sigs = "serving_default, hash_image_bytes" + (", search" if args.database else "")
    print(f"exported {args.model} -> {path} (signatures: {sigs})")
    return path
