"""`coophash encode`: binary codes of image files; `--out FILE.parquet` streams any number of files
(a folder with --dataset images:PATH) into a codes file (coophash_keras/code_files.py)."""

from coophash_keras.cli.common import DATASET_HELP, CLIError, code_text, read_images


def add_parser(sub):
    c = sub.add_parser("encode", help="print binary codes of images (PNG/JPEG files or .npy arrays)")
    c.add_argument("--run-dir", required=True, help="run directory or model.keras path")
    c.add_argument("images", nargs="*")
    c.add_argument("--packed", action="store_true", help="print packed bytes as hex (bit 1 = +1, MSB first)")
    c.add_argument("--output", default=None, help="also save the codes to this .npy file")
    c.add_argument(
        "--dataset", default=None, help="encode this data set's files instead of IMAGES (with --out): " + DATASET_HELP
    )
    c.add_argument("--data-dir", default=None)
    c.add_argument(
        "--out",
        default=None,
        metavar="FILE.parquet",
        help="stream the packed codes with their paths into a Parquet codes file (columns path, code; see "
        "docs/MILLION.md) instead of printing them",
    )
    c.set_defaults(func=run)


def run(args):
    import numpy as np

    from coophash_keras.evaluation import model_path
    from coophash_keras.io import load_model

    if args.out:
        return write_codes_file(args)
    if args.dataset:
        raise CLIError("--dataset needs --out FILE.parquet (printing a data set's codes is not what you want)")
    if not args.images:
        raise CLIError("encode needs image files (or --dataset DATASET --out FILE.parquet)")
    model = load_model(model_path(args.run_dir))
    images, names = read_images(args.images, model.config.image_shape)
    codes = model.encode(images, packed=args.packed)
    if args.output:
        np.save(args.output, codes)
        print(f"wrote {codes.shape} {codes.dtype} codes to {args.output}")
    for path, code in zip(names, codes):
        print(f"{path}\t{code.tobytes().hex() if args.packed else code_text(code)}")
    return codes


def write_codes_file(args):
    """Stream the files' packed codes into args.out, one row group per batch; undecodable files
    are named and left out, and counted at the end."""
    import time

    from coophash_keras.cli.index import files_table, load_model_data
    from coophash_keras.code_files import CodesWriter
    from coophash_keras.encoding import Progress, encode_rows
    from coophash_keras.evaluation import model_path
    from coophash_keras.io import load_model, model_fingerprint

    if bool(args.images) == bool(args.dataset):
        raise CLIError("--out encodes --dataset DATASET or image files (one of them)")
    if args.output or args.packed:
        raise CLIError("--out writes a codes file: it takes no --output or --packed")
    path = model_path(args.run_dir)
    model = load_model(path)
    if args.dataset:
        data = load_model_data(args.dataset, args.data_dir, model.config)
        if "paths" not in data.extras:
            raise CLIError(f"{args.dataset} has no files: --out writes file paths with their codes")
    else:
        data = files_table(args.images, model.config.image_shape)
    start = time.time()
    verbose = getattr(args, "keras_verbosity", 0)
    progress = Progress(len(data), verbose) if verbose else None
    paths = data.extras["paths"]
    with CodesWriter(args.out, model.config.num_bits, model_fingerprint(path)) as out:
        for rows, packed in encode_rows(model, data, packed=True, progress=progress):
            out.write(paths[rows], packed)
    seconds = time.time() - start
    print(
        f"wrote {out.count} codes ({model.config.num_bits} bits) of {data.name} in {seconds:.1f}s "
        f"({out.count / max(seconds, 1e-9):.0f} images/s) -> {args.out}"
    )
    return out.count
