"""`coophash export`: a TF-Serving SavedModel <base>/<name>/<version>/ (export/ holds the contract)."""

import json
import os

from coophash_keras.cli.common import open_rate, positive_int


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
    x.add_argument(
        "--ood-tpr",
        type=open_rate,
        default=0.95,
        help="share of held-out in-distribution images the `in_distribution` output keeps (default 0.95)",
    )
    x.add_argument(
        "--ood-calibration",
        default=None,
        metavar="RUN",
        help="run whose held-out query images set the `in_distribution` threshold "
        "(default: --model when it is a run directory, else --database)",
    )
    x.set_defaults(func=run)


def _run_rows(run_dir, part, batch_size=1024):
    """(uint8 images, row indices) batches of one split part ('database', 'query') of a run,
    decoded as trained, streamed; a file that no longer decodes is left out (named, counted)."""
    from coophash_keras.data import RetrievalSplit
    from coophash_keras.evaluation import load_run, load_run_data

    data = load_run_data(load_run(run_dir))
    indices = getattr(RetrievalSplit.load(os.path.join(run_dir, "split.npz")), part)
    if len(indices) == 0:
        return
    skipped = 0
    for images, _, rows, ok in data.subset(indices).as_dataset(batch_size, rows=True):
        ok = ok.numpy()
        skipped += int(len(ok) - ok.sum())
        yield images.numpy()[ok], indices[rows.numpy()[ok]].astype("int64")
    if skipped:
        data.warn(f"{data.name}: skipped {skipped} of {len(indices)} {part} files that could not be decoded")


def _run_images(run_dir, part):
    """uint8 images of one split part of a run (for the held-out queries: a few thousand)."""
    import numpy as np

    batches = [images for images, _ in _run_rows(run_dir, part)]
    return np.concatenate(batches) if batches else np.zeros((0,), np.uint8)  # a label-free run has no queries


def run(args):
    from coophash_keras.evaluation import model_path
    from coophash_keras.export import export_saved_model
    from coophash_keras.export.saved_model import min_calibration_images

    # The database is streamed: only its codes are held, whatever its size.
    database = _run_rows(args.database, "database") if args.database else None
    # The queries of a run were never trained on: held-out in-distribution images.
    calibration = args.ood_calibration or next(
        (r for r in (args.model, args.database) if r and os.path.exists(os.path.join(r, "split.npz"))), None
    )
    ood_images = _run_images(calibration, "query") if calibration else None
    if ood_images is not None and not args.ood_calibration and len(ood_images) < min_calibration_images(args.ood_tpr):
        print(f"{calibration} holds only {len(ood_images)} held-out images: too few to set in_distribution's threshold")
        ood_images = None
    path = export_saved_model(
        model_path(args.model),
        args.base,
        args.name,
        args.version,
        search_k=args.search_k,
        ood_images=ood_images,
        ood_tpr=args.ood_tpr,
        database_batches=database,
    )
    sigs = "serving_default, hash_image_bytes" + (", search" if args.database else "")
    print(f"exported {args.model} -> {path} (signatures: {sigs})")
    with open(os.path.join(path, "assets.extra", "coophash.json")) as fh:
        info = json.load(fh)
    ood = info["ood"]
    print(f"energy = {info['energy']}")
    if ood:
        print(
            f"in_distribution = energy >= {ood['threshold']:.4g}: keeps {100 * ood['calibration_tpr']:.1f}% of "
            f"{ood['calibration_images']} held-out images of {calibration} (asked {100 * ood['tpr']:.1f}%)"
        )
    else:
        print("no in_distribution output: no held-out images to set its threshold (--ood-calibration RUN)")
    return path
