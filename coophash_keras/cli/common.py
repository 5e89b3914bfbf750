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
port_number = _typed(int, lambda v: 0 <= v <= 65535, "a port in [0, 65535]")


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
    p.add_argument("--dataset", default="digits", help="digits | fashion_mnist | npz:PATH | tfds:NAME (default digits)")
    p.add_argument("--data-dir", default=None, help="directory of the dataset files (fashion_mnist, tfds)")
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
    p.add_argument("--config", default=None, metavar="FILE", help="start from this config.json / best_config.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a CoopHashConfig field")


def add_strategy_arguments(p):
    p.add_argument(
        "--workers", default=None, metavar="HOST:PORT,...", help="MultiWorkerMirroredStrategy over these workers"
    )
    p.add_argument("--task-index", type=nonnegative_int, default=None, help="this worker's index (0 = chief)")
    p.add_argument("--mirrored", action="store_true", help="MirroredStrategy over this machine's GPUs")


def worker_list(text):
    return [w.strip() for w in text.split(",") if w.strip()] if text else None


def read_images(paths, image_shape):
    """Image files (PNG/JPEG/...; resized to the model's H x W and channel count) or .npy arrays
    -> (uint8 [N, H, W, C], one name per image)."""
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


def code_text(code):
    """±1 code -> '0101...' (bit 1 = +1)."""
    return "".join("1" if b > 0 else "0" for b in code)
