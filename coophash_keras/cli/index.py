"""`coophash index build|search|export`: a persisted HammingIndex of a dataset's (or image files')
codes, searched locally or exported to Milvus."""

from coophash_keras.cli.common import DATASET_HELP, CLIError, read_images


def add_parser(sub):
    from coophash_keras.cli.common import positive_int

    ix = sub.add_parser("index", help="build, query or export a persisted HammingIndex")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    b = ixs.add_parser("build", help="encode a dataset (or image files) with a model and save a HammingIndex")
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
    b.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="FILE",
        help="index these image files instead (ids 0.., paths kept)",
    )
    b.add_argument(
        "--paths", default=None, metavar="TXT", help="a text file with one path per dataset image, stored in the index"
    )
    b.add_argument("--out", required=True)
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=build)
    se = ixs.add_parser("search", help="top-k neighbours of image files")
    se.add_argument("--index", required=True, help="an index file, or milvus:URI#COLLECTION")
    se.add_argument("--model", required=True, help="run directory or model.keras (must be the index's model)")
    se.add_argument("--k", type=positive_int, default=10)
    se.add_argument("--no-verify", action="store_true", help="skip the index checksums (huge files)")
    se.add_argument("images", nargs="+")
    se.set_defaults(func=search)
    ex = ixs.add_parser("export", help="write an index's codes, ids and paths to a Milvus collection")
    ex.add_argument("--index", required=True, help="the index file to export")
    ex.add_argument(
        "--to",
        required=True,
        metavar="milvus:URI#COLLECTION",
        help="e.g. milvus:http://host:19530#codes or milvus:./codes.db#codes",
    )
    ex.add_argument("--index-type", choices=["BIN_FLAT", "BIN_IVF_FLAT"], default="BIN_FLAT")
    ex.add_argument("--nlist", type=positive_int, default=1024, help="BIN_IVF_FLAT lists")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing collection")
    ex.set_defaults(func=export)


def build(args):
    import os
    import time

    import numpy as np

    from coophash_keras.data import RetrievalSplit
    from coophash_keras.evaluation import model_path
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint

    if os.path.exists(args.out) and not args.overwrite:
        raise CLIError(f"{args.out} exists; pass --overwrite to replace it")
    if args.images and (args.split or args.paths):
        raise CLIError("--images indexes files: it takes no --split or --paths")
    path = model_path(args.model)
    model = load_model(path)
    paths = None
    if args.images:
        images, paths = read_images(args.images, model.config.image_shape)
        ids = np.arange(len(images))
    else:
        data = load_model_data(args.dataset, args.data_dir, model.config)
        ids = np.arange(len(data))
        if args.split:
            if not os.path.isdir(args.model):
                raise CLIError("--split needs --model to be a run directory (it reads RUN/split.npz)")
            check_run_data(args.model, args.dataset, data)
            ids = getattr(RetrievalSplit.load(os.path.join(args.model, "split.npz")), args.split)
        if args.paths:
            paths = [_read_paths(args.paths, len(data))[i] for i in ids]
        elif "paths" in data.extras:  # image-file datasets know where every image came from
            paths = [str(p) for p in data.extras["paths"][ids]]
        images = data.images[ids]
    start = time.time()
    codes = model.encode(images, packed=True, verbose=1 if len(ids) > 10000 else 0)
    index = HammingIndex(model.config.num_bits, model_fingerprint(path))
    index.add(codes, ids, paths=paths)
    index.save(args.out)
    print(
        f"indexed {len(index)} codes ({model.config.num_bits} bits, model {index.model_version}"
        f"{', with paths' if paths is not None else ''}) in {time.time() - start:.1f}s -> {args.out}"
    )


def _read_paths(txt, count):
    import os

    if not os.path.isfile(txt):
        raise CLIError(f"missing paths file {txt}")
    with open(txt, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if len(lines) != count:
        raise CLIError(f"{txt} has {len(lines)} lines; the dataset has {count} images (one path per line)")
    return lines


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
    from coophash_keras.evaluation import load_run

    run = load_run(run_dir)
    if run.get("dataset") == dataset:
        check_dataset_record(run, data)


def search(args):
    from coophash_keras.evaluation import model_path
    from coophash_keras.index import open_index
    from coophash_keras.io import load_model, model_fingerprint

    path = model_path(args.model)
    index = open_index(args.index, verify=not args.no_verify)
    fingerprint = model_fingerprint(path)
    if index.model_version and index.model_version != fingerprint:
        raise CLIError(
            f"{args.index} was built by model version {index.model_version!r}, not {fingerprint!r}: codes from "
            "different models are not comparable; rebuild the index"
        )
    model = load_model(path)
    images, names = read_images(args.images, model.config.image_shape)
    ids, distances = index.search(model.encode(images, packed=True), args.k)
    paths = index.paths_for(ids) if index.has_paths else None
    for j, (name, i, d) in enumerate(zip(names, ids, distances)):
        extra = f"\tpaths={list(paths[j])}" if paths is not None else ""
        print(f"{name}\tids={i.tolist()}\tdistances={d.tolist()}{extra}")
    return ids, distances


def export(args):
    from coophash_keras.index import HammingIndex
    from coophash_keras.index.milvus import MilvusIndex, parse_target

    uri, collection = parse_target(args.to)
    index = HammingIndex.load(args.index)  # verified: never export a corrupted index
    remote = MilvusIndex.export(
        index, uri, collection, overwrite=args.overwrite, index_type=args.index_type, nlist=args.nlist
    )
    print(f"exported {len(remote)} codes ({index.num_bits} bits) from {args.index} to Milvus {uri} #{collection}")
    remote.close()
