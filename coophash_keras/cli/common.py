"""What the command modules share: the one-line error, argument types, common flags, image files."""

import argparse
import json
import os


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def _typed(cast, check, what):
    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _typed(int, lambda v: v > 0, "an integer > 0")
nonnegative_int = _typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _typed(float, lambda v: v > 0, "a number > 0")
open_rate = _typed(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
port_number = _typed(int, lambda v: 0 <= v <= 65535, "a port in [0, 65535]")


def image_size(text):
    """--image-size 'H,W' (or 'N' for N,N) -> (H, W)."""
    from coophash_keras.data.files import ImageFileError, parse_image_size

    try:
        return parse_image_size(text)
    except ImageFileError:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers > 0, e.g. 64,64), got {text!r}") from None


DATASET_HELP = (
    "digits | fashion_mnist | npz:PATH | tfds:NAME | folder:PATH (one subfolder per class) | "
    "csv:PATH (columns file,labels; labels separated by ';') | images:PATH (unlabelled images)"
)


def parse_overrides(pairs):
    """--set KEY=VALUE pairs -> {key: JSON value (or the raw string)}; types and ranges are
    checked by CoopHashConfig, which names the field."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def add_data_arguments(p, bits=True):
    """The flags that choose data, split and config (train and tune)."""
    p.add_argument("--dataset", default="digits", help=DATASET_HELP + " (default digits)")
    p.add_argument("--data-dir", default=None, help="directory of the dataset files (fashion_mnist, tfds)")
    add_image_file_arguments(p)
    if bits:
        p.add_argument("--bits", type=positive_int, default=32, help="K, a multiple of 8 (default 32)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--query-per-class", type=nonnegative_int, default=20)
    p.add_argument(
        "--labels-per-class",
        type=positive_int,
        default=None,
        help="labeled training images per class (default: all non-query images)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow's op determinism and every seed set: the same command gives the same codes (slower)",
    )
    p.add_argument("--config", default=None, metavar="FILE", help="start from this config.json / best_config.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a CoopHashConfig field")
    add_backbone_arguments(p)


def add_unlabeled_argument(p):
    """--unlabeled DATASET: RunSpec.unlabeled (train and tune)."""
    p.add_argument(
        "--unlabeled",
        default=None,
        metavar="DATASET",
        help="an unlabelled pool for the models that use one (e.g. images:PATH; a labelled data set's labels are "
        "ignored): decoded like the labelled images, streamed from its files; replaces the pool "
        "--labels-per-class leaves over. itq/lsh fit on it",
    )


def add_backbone_arguments(p):
    """--backbone / --backbone-weights: the config fields `backbone` and `backbone_weights`."""
    p.add_argument(
        "--backbone",
        default=None,
        metavar="NAME",
        help="a pretrained base for every model: a keras.applications name (MobileNetV3Small, EfficientNetB0, "
        "ResNet50, ...) or hub:PRESET (keras-hub preset or local preset folder); default: the conv base",
    )
    p.add_argument(
        "--backbone-weights",
        default=None,
        metavar="imagenet|none|FILE",
        help="the backbone's initial weights: imagenet (default; ~/.keras/models/ or a download), none, or a "
        "weights file (e.g. the keras.applications *_notop.h5 fetched on another machine)",
    )


def config_overrides(args):
    """--set pairs, then --backbone / --backbone-weights, as CoopHashConfig overrides."""
    out = parse_overrides(args.set)
    if getattr(args, "backbone", None) is not None:
        out["backbone"] = args.backbone
    if getattr(args, "backbone_weights", None) is not None:
        out["backbone_weights"] = args.backbone_weights
    return out


def add_method_argument(p):
    p.add_argument(
        "--method",
        default=None,
        metavar="MODEL[:VARIANT]",
        help="a named configuration as the benchmarks name it, e.g. coophash:fewlabels or coophash:fewlabels/"
        "no_energy_head (coophash_keras/variants.py); --set applies on top of it",
    )


def model_and_overrides(args):
    """(registry model or None, CoopHashConfig overrides) of train and tune. A --method names the
    model itself: RunSpec resolves it (a bad name is a RunError, printed as one line), and its variant
    applies after --config and before --set and the backbone flags (runs.build_config), so an
    explicit flag always wins over the named variant."""
    if getattr(args, "method", None) and (args.model or args.ablation):
        raise CLIError("--method names the model and its variant; drop --model / --ablation")
    return args.model, config_overrides(args)


def add_image_file_arguments(p):
    """How folder:/csv:/images: files are decoded (the run records what was used)."""
    p.add_argument(
        "--image-size",
        type=image_size,
        default=None,
        metavar="H,W",
        help="resize image files to H x W (default: the size of the first image)",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=None,
        help="1 = greyscale, 3 = RGB for image files (default: the majority of the files)",
    )


def add_strategy_arguments(p):
    p.add_argument(
        "--workers", default=None, metavar="HOST:PORT,...", help="MultiWorkerMirroredStrategy over these workers"
    )
    p.add_argument("--task-index", type=nonnegative_int, default=None, help="this worker's index (0 = chief)")
    p.add_argument("--mirrored", action="store_true", help="MirroredStrategy over this machine's GPUs")


def worker_list(text):
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def read_images(paths, image_shape):
    """Image files (PNG/JPEG/...; resized to the model's H x W and channel count by the same
    decode_image as folder:/csv:/images: datasets) or .npy arrays -> (uint8 [N, H, W, C], one name
    per image)."""
    import numpy as np

    from coophash_keras.data.files import BadImage, decode_image

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
            out.append(decode_image(path, (h, w), c))
        except BadImage as exc:
            raise CLIError(f"{path} is not a readable image: {exc}") from None
        names.append(path)
    return np.stack(out), names


def code_text(code):
    """±1 code -> '0101...' (bit 1 = +1)."""
    return "".join("1" if b > 0 else "0" for b in code)
