"""`coophash index build|search`: a persisted HammingIndex of a dataset's codes."""

from coophash_keras.cli.common import DATASET_HELP, CLIError, read_images


def add_parser(sub):
    from coophash_keras.cli.common import positive_int

    ix = sub.add_parser("index", help="build or query a persisted HammingIndex")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    b = ixs.add_parser("build", help="encode a dataset with a model and save a HammingIndex")
    b.add_argument("--model", required=True, help="run directory or model.keras")
    b.add_argument(
        "--dataset", default="digits", help=DATASET_HELP + "; image files are resized to the model's input shape"
    )
    b.add_argument("--data-dir", default=None)
    b.add_argument(
        "--split",
        choices=["database", "query", "train", "unlabeled"],
        default=None,
        help="index only this split of the run (ids = dataset indices); default: every image",
    )
    b.add_argument("--out", required=True)
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=build)
    se = ixs.add_parser("search", help="top-k neighbours of image files")
    se.add_argument("--index", required=True)
    se.add_argument("--model", required=True, help="run directory or model.keras (must be the index's model)")
    se.add_argument("--k", type=positive_int, default=10)
    se.add_argument("images", nargs="+")
    se.set_defaults(func=search)


def build(args):
    import os
    import time

    import numpy as np

    from coophash_keras.data import RetrievalSplit
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint
    from coophash_keras.runs import model_path

    if os.path.exists(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} exists; pass --overwrite to replace it")
    path = model_path(args.model)
    model = load_model(path)
    data = load_model_data(args.dataset, args.data_dir, model.config)
    ids = np.arange(len(data))
    if args.split:
        if not os.path.isdir(args.model):
            raise CLIError("--split needs --model to be a run directory (it reads RUN/split.npz)")
        check_run_data(args.model, args.dataset, data)
        ids = getattr(RetrievalSplit.load(os.path.join(args.model, "split.npz")), args.split)
    start = time.time()
    codes = model.encode(data.images[ids], packed=True, verbose=1 if len(ids) > 10000 else 0)
    index = HammingIndex(model.config.num_bits, model_fingerprint(path))
    index.add(codes, ids)
    index.save(args.out)
    print(
        f"indexed {len(index)} codes ({model.config.num_bits} bits, model {index.model_version}) in "
        f"{time.time() - start:.1f}s -> {args.out}"
    )


def load_model_data(dataset, data_dir, config):
    """A dataset to encode with a model: image files (folder:/csv:/images:) are decoded to the
    model's input shape; the other datasets have theirs."""
    from coophash_keras.data import load_dataset
    from coophash_keras.data.files import is_file_dataset

    if is_file_dataset(dataset):
        h, w, c = config.image_shape
        return load_dataset(dataset, data_dir, image_size=(h, w), channels=c)
    return load_dataset(dataset, data_dir)


def check_run_data(run_dir, dataset, data):
    """Split ids index the run's own dataset: when that is `dataset`, it must not have changed."""
    from coophash_keras.data.files import check_dataset_record
    from coophash_keras.runs import load_run

    run = load_run(run_dir)
    if run.get("dataset") == dataset:
        check_dataset_record(run, data)


def search(args):
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint
    from coophash_keras.runs import model_path

    path = model_path(args.model)
    index = HammingIndex.load(args.index, expected_model_version=model_fingerprint(path))
    model = load_model(path)
    images, names = read_images(args.images, model.config.image_shape)
    ids, distances = index.search(model.encode(images, packed=True), args.k)
    for name, i, d in zip(names, ids, distances):
        print(f"{name}\tids={i.tolist()}\tdistances={d.tolist()}")
    return ids, distances
