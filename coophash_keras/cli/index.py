"""`coophash index build|search|export`: a persisted HammingIndex of a dataset's (or image files')
codes, searched locally or exported to Milvus."""

from coophash_keras.cli.common import DATASET_HELP, CLIError, read_images


def add_parser(sub):
    from coophash_keras.cli.common import positive_int

    ix = sub.add_parser("index", help="build, query or export a persisted HammingIndex")
    ixs = ix.add_subparsers(dest="index_command", required=True)
    b = ixs.add_parser("build", help="encode a dataset (or image files) with a model and save a HammingIndex")
    b.add_argument("--model", default=None, help="run directory or model.keras (with --from-shards: checked)")
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
    b.add_argument(
        "--from-shards",
        default=None,
        metavar="PATTERN",
        help="build from Parquet codes files (coophash encode --out, the Beam pipeline's shards), e.g. 'codes-*.parquet'",
    )
    b.add_argument("--out", required=True)
    b.add_argument("--overwrite", action="store_true")
    b.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=None,
        help="rows encoded per resumable chunk, a multiple of 256 (default 16384): a kill loses at most one chunk",
    )
    _progress_argument(b)
    b.set_defaults(func=build)
    a = ixs.add_parser("add", help="encode new image files into an index (paths already in it are skipped)")
    a.add_argument("--index", required=True)
    a.add_argument("--model", required=True, help="run directory or model.keras (must be the index's model)")
    a.add_argument("--dataset", default=None, help="folder:PATH, csv:PATH or images:PATH: the files to add")
    a.add_argument("--data-dir", default=None)
    a.add_argument("images", nargs="*", help="or image files to add")
    _progress_argument(a)
    a.set_defaults(func=add)
    r = ixs.add_parser("remove", help="remove items from an index by path or id")
    r.add_argument("--index", required=True)
    r.add_argument("--paths", nargs="+", default=None, metavar="PATH")
    r.add_argument("--ids", nargs="+", type=int, default=None, metavar="ID")
    r.set_defaults(func=remove)
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


def _progress_argument(p):
    """--progress at the subcommand (`coophash index build ... --progress bar`), as every command has it."""
    p.add_argument(
        "--progress",
        choices=["auto", "bar", "epoch", "none"],
        default="auto",
        help="a progress bar with images/s and the ETA, one line at the end, or nothing (auto: bar on a terminal)",
    )


def _check_target(out, overwrite):
    import os

    if os.path.exists(out) and not overwrite and not os.path.isdir(out + ".partial"):
        raise CLIError(f"{out} exists; pass --overwrite to replace it")


def build(args):
    import os
    import time

    import numpy as np

    from coophash_keras.data import RetrievalSplit
    from coophash_keras.evaluation import model_path
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import load_model, model_fingerprint

    if args.from_shards:
        return build_from_shards(args)
    if not args.model:
        raise CLIError("index build needs --model (or --from-shards PATTERN)")
    _check_target(args.out, args.overwrite)
    if args.images and (args.split or args.paths):
        raise CLIError("--images indexes files: it takes no --split or --paths")
    path = model_path(args.model)
    model = load_model(path)
    paths = None
    if args.images:
        data = files_table(args.images, model.config.image_shape)
        ids = np.arange(len(data))
    else:
        data = load_model_data(args.dataset, args.data_dir, model.config)
        ids = np.arange(len(data))
        if args.split:
            if not os.path.isdir(args.model):
                raise CLIError("--split needs --model to be a run directory (it reads RUN/split.npz)")
            check_run_data(args.model, args.dataset, data)
            ids = getattr(RetrievalSplit.load(os.path.join(args.model, "split.npz")), args.split)
        if args.paths:
            paths = np.asarray(_read_paths(args.paths, len(data)), dtype=object)[ids]
        data = data.subset(ids)
    if paths is None and "paths" in data.extras:  # image-file datasets know where every image came from
        paths = data.extras["paths"]
    start = time.time()
    version = model_fingerprint(path)
    codes, rows = _encode_table(model, version, data, args.out, getattr(args, "keras_verbosity", 0), args.chunk_rows)
    index = HammingIndex(model.config.num_bits, version)
    index.add(codes, ids[rows], paths=None if paths is None else [str(p) for p in paths[rows]])
    index.save(args.out)
    _finish(args.out)
    seconds = time.time() - start
    print(
        f"indexed {len(index)} codes ({model.config.num_bits} bits, model {index.model_version}"
        f"{', with paths' if paths is not None else ''}) in {seconds:.1f}s ({len(index) / max(seconds, 1e-9):.0f} "
        f"images/s) -> {args.out}"
    )
    return index


def _encode_table(model, version, data, target, verbose, chunk_rows=None):
    """Every row's packed code, in chunks kept in TARGET.partial (resumable), with the count of the
    files that could not be decoded in one line."""
    from coophash_keras.data.files import ImageFileError
    from coophash_keras.index.building import CHUNK_ROWS, encode_in_chunks

    chunk_rows = chunk_rows or CHUNK_ROWS
    try:
        codes, rows = encode_in_chunks(model, version, data, target + ".partial", verbose, chunk_rows)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if len(rows) < len(data):
        if not len(rows):
            _finish(target)
            raise ImageFileError(f"{data.name}: no readable images (every file failed to decode)")
        data.warn(f"{data.name}: skipped {len(data) - len(rows)} of {len(data)} files that could not be decoded")
    return codes, rows


def _finish(target):
    from coophash_keras.index.building import finish

    finish(target + ".partial")


def files_table(files, image_shape):
    """Image files named on the command line as an ImageSet of file rows (decoded when encoded);
    .npy arrays among them are read into memory (one row per image, named FILE[i])."""
    import os

    import numpy as np

    from coophash_keras.data.files import UNLABELED
    from coophash_keras.data.image_set import ImageSet

    for f in files:
        if not os.path.isfile(f):
            raise CLIError(f"missing image file {f}")
    labels = np.full(len(files), UNLABELED, np.int64)
    if any(f.endswith(".npy") for f in files):
        images, names = read_images(files, image_shape)
        return ImageSet(
            images,
            np.full(len(images), UNLABELED, np.int64),
            0,
            False,
            [],
            "files",
            {"paths": np.asarray(names, dtype=str)},
        )
    return ImageSet(None, labels, 0, False, [], "files", {"paths": np.asarray(files, dtype=str)}, tuple(image_shape))


def build_from_shards(args):
    """An index of codes files (coophash encode --out, the Beam pipeline's shards): ids 0.. in sorted
    file then row order, the paths kept, the shards' model version stored."""
    import time

    import numpy as np

    from coophash_keras.code_files import read_codes
    from coophash_keras.index import HammingIndex

    _check_target(args.out, args.overwrite)
    if args.images or args.split or args.paths:
        raise CLIError("--from-shards reads codes files: it takes no --images, --split or --paths")
    start = time.time()
    shards = read_codes(args.from_shards)
    if args.model:
        from coophash_keras.evaluation import model_path
        from coophash_keras.io import model_fingerprint

        expected = model_fingerprint(model_path(args.model))
        if shards.model_version != expected:
            raise CLIError(
                f"{args.from_shards} holds codes of model {shards.model_version!r}, not {expected!r} (--model)"
            )
    codes, paths = [], []
    for batch_paths, packed in shards.batches():
        paths.extend(batch_paths)
        codes.append(packed)
    packed = np.concatenate(codes) if codes else np.zeros((0, shards.num_bits // 8), np.uint8)
    index = HammingIndex(shards.num_bits, shards.model_version)
    index.add(packed, np.arange(len(packed)), paths=paths)
    index.save(args.out)
    print(
        f"indexed {len(index)} codes ({shards.num_bits} bits, model {index.model_version}, with paths) from "
        f"{len(shards.files)} codes file(s) in {time.time() - start:.1f}s -> {args.out}"
    )
    return index


def _open_for_change(args):
    from coophash_keras.index import HammingIndex

    index = HammingIndex.load(args.index, mmap=False)  # verified; the file stays as it is until the save
    return index


def add(args):
    """New files into an index: paths already in it are skipped; both counts reported. The index
    is rewritten atomically (the old one stays readable until the new one is complete)."""
    import time

    import numpy as np

    from coophash_keras.evaluation import model_path
    from coophash_keras.io import load_model, model_fingerprint

    index = _open_for_change(args)
    path = model_path(args.model)
    version = model_fingerprint(path)
    if index.model_version != version:
        raise CLIError(
            f"{args.index} was built by model {index.model_version!r}, not {version!r} (--model): codes from "
            "different models are not comparable; the index is unchanged"
        )
    if not index.has_paths:
        raise CLIError(f"{args.index} keeps no file paths: index add needs them to skip the files already in it")
    if bool(args.images) == bool(args.dataset):
        raise CLIError("index add takes --dataset images:PATH (or folder:/csv:) or image files, not both")
    start = time.time()
    model = load_model(path)
    data = files_table(args.images, model.config.image_shape) if args.images else None
    if data is None:
        data = load_model_data(args.dataset, args.data_dir, model.config)
    present = set(index.paths_for(index.ids).tolist()) if len(index) else set()
    new = np.asarray([i for i, p in enumerate(data.extras["paths"]) if str(p) not in present], np.int64)
    already = len(data) - len(new)
    added = 0
    if len(new):
        data = data.subset(new)
        codes, rows = _encode_table(model, version, data, args.index + ".add", getattr(args, "keras_verbosity", 0))
        index.add(codes, paths=[str(p) for p in data.extras["paths"][rows]])
        index.save(args.index)
        _finish(args.index + ".add")
        added = len(rows)
    print(
        f"added {added} codes, skipped {already} paths already in the index, in {time.time() - start:.1f}s: "
        f"{args.index} holds {len(index)}"
    )
    return index


def remove(args):
    """Remove items by path or by id; the index is rewritten atomically."""
    import numpy as np

    index = _open_for_change(args)
    ids = [int(i) for i in args.ids or []]
    if args.paths:
        if not index.has_paths:
            raise CLIError(f"{args.index} keeps no file paths: remove by --ids")
        all_ids = np.asarray(index.ids)
        row_of = {p: r for r, p in enumerate(index.paths_for(all_ids).tolist())}
        missing = [p for p in args.paths if p not in row_of]
        if missing:
            raise CLIError(f"not in {args.index}: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        ids += [int(all_ids[row_of[p]]) for p in args.paths]
    if not ids:
        raise CLIError("index remove needs --paths or --ids")
    try:
        removed = index.remove(np.asarray(ids, np.int64))
    except KeyError as exc:
        raise CLIError(f"{args.index}: {exc.args[0]}") from None
    index.save(args.index)
    print(f"removed {removed} codes: {args.index} holds {len(index)}")
    return index


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
