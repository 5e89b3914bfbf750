"""Write Fashion-MNIST as PNG files in class folders, for trying `--dataset folder:PATH`
(docs/YOUR_OWN_IMAGES.md):

    python scripts/make_fashion_folder.py --out data/fashion_png --per-class 200 --split train \\
        [--unlabeled data/fashion_unlabeled --unlabeled-count 500|all [--unlabeled-by-class]]

writes OUT/<class>/<split>_<index>.png (28x28 greyscale) for the first --per-class images of each
class in the IDX file's order, and optionally the next --unlabeled-count images (any class, not
already written; `all`: every one left) into one flat folder for `images:PATH`, or with
--unlabeled-by-class into class subfolders of it: `images:DIR` still reads them without labels (for
`train --unlabeled`), and `folder:DIR` with them (for `evaluate --database`, as the harness's
database holds the pool with its labels; docs/FEW_LABELS.md). Deterministic: the same arguments give the
same files. Folder names are lower-case class names (t-shirt_top, trouser, ..., ankle_boot), so the
folder dataset's class ids follow their alphabetical order, not Fashion-MNIST's label numbers.
The unlabelled folder should not be inside OUT, or folder:OUT would take it for a class."""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the package imports TensorFlow


def folder_name(class_name):
    return class_name.lower().replace("/", "_").replace(" ", "_")


def write_png(array, path):
    from PIL import Image

    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the class subfolders")
    p.add_argument("--per-class", type=int, default=200, help="images per class (default 200)")
    p.add_argument("--split", choices=["train", "test"], default="train", help="which IDX files (default train)")
    p.add_argument("--unlabeled", default=None, metavar="DIR", help="also write unlabelled images into DIR")
    p.add_argument(
        "--unlabeled-count",
        type=lambda v: -1 if v == "all" else int(v),
        default=500,
        help="images in --unlabeled (default 500; all = every image not in OUT)",
    )
    p.add_argument(
        "--unlabeled-by-class", action="store_true", help="write --unlabeled as class subfolders (still images:DIR)"
    )
    p.add_argument(
        "--data-dir", default=None, help="Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)"
    )
    args = p.parse_args(argv)
    if args.per_class <= 0 or args.unlabeled_count == 0 or args.unlabeled_count < -1:
        p.error("--per-class and --unlabeled-count must be > 0 (or --unlabeled-count all)")
    if args.unlabeled and os.path.abspath(args.unlabeled).startswith(os.path.abspath(args.out) + os.sep):
        p.error("--unlabeled must not be inside --out (it would become a class folder)")

    import numpy as np

    from coophash_keras.data import FASHION_MNIST_DIR, load_fashion_mnist

    try:
        data = load_fashion_mnist(args.data_dir or FASHION_MNIST_DIR, split=args.split)
    except (FileNotFoundError, ValueError) as exc:
        sys.exit(f"make_fashion_folder: {exc}")
    chosen = np.zeros(len(data), bool)
    for k, name in enumerate(data.class_names):
        members = np.flatnonzero(data.labels == k)[: args.per_class]
        if len(members) < args.per_class:
            sys.exit(f"make_fashion_folder: class {name} has only {len(members)} {args.split} images")
        folder = os.path.join(args.out, folder_name(name))
        os.makedirs(folder, exist_ok=True)
        for i in members:
            write_png(data.images[i], os.path.join(folder, f"{args.split}_{i:05d}.png"))
        chosen[members] = True
    print(f"wrote {chosen.sum()} images in {len(data.class_names)} class folders under {args.out}")
    if args.unlabeled:
        rest = np.flatnonzero(~chosen)
        rest = rest if args.unlabeled_count == -1 else rest[: args.unlabeled_count]
        for i in rest:
            folder = args.unlabeled
            if args.unlabeled_by_class:
                folder = os.path.join(folder, folder_name(data.class_names[data.labels[i]]))
            os.makedirs(folder, exist_ok=True)
            write_png(data.images[i], os.path.join(folder, f"{args.split}_{i:05d}.png"))
        print(f"wrote {len(rest)} unlabelled images to {args.unlabeled}")


if __name__ == "__main__":
    main()
