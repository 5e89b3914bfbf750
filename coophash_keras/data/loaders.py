"""The built-in image sets: digits (embedded), Fashion-MNIST IDX files, TFDS and npz arrays. Each
returns an ImageSet (data/image_set.py); your own image files are data/files.py's, and
`load_dataset` (data/datasets.py) picks the loader by name."""

import gzip
import os
import struct

import numpy as np

from coophash_keras.data.image_set import ImageSet, from_arrays
from coophash_keras.data.validation import validate_labels
from coophash_keras.preprocessing import to_uint8_images

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def load_npz(path):
    """An npz file of arrays `images` [N, H, W(, C)] and `labels` (class ids [N] or multi-hot
    [N, C]), and optionally `num_classes` (a number) or `class_names` (one string per class) to
    declare the classes; then a label outside them is an error naming it. Without them the
    classes are 0..the largest label, each with at least one image (from_arrays)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"missing data file {path}")
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable npz file: {exc}") from None
    if "images" not in arrays or "labels" not in arrays:
        raise ValueError(f"{path} must hold arrays 'images' and 'labels', found {sorted(arrays)}")
    labels = arrays["labels"]
    multi = labels.ndim == 2 and labels.shape[1] > 1
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else None
    declared = int(arrays["num_classes"]) if "num_classes" in arrays else None
    if names is not None and declared is not None and len(names) != declared:
        raise ValueError(f"{path}: num_classes is {declared} but class_names has {len(names)} names")
    num_classes = declared if declared is not None else (len(names) if names is not None else None)
    return from_arrays(arrays["images"], labels, num_classes, multi, names, name)


def load_digits():
    """scikit-learn's 1,797 8x8 digits (shipped with scikit-learn, no download), 0..16 -> 0..255."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = to_uint8_images(d.images, max_value=16.0)[..., None]
    return ImageSet(images, d.target.astype(np.int64), 10, False, [str(i) for i in range(10)], "digits")


def _read_idx(path):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"missing data file {path}. Fashion-MNIST comes from the Debian package dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist, files in {FASHION_MNIST_DIR}) or any directory "
            "holding the four *-idx?-ubyte.gz files"
        )
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable IDX file: {exc}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims}, found {payload.size} values")
    return payload.reshape(dims)


def load_fashion_mnist(directory=FASHION_MNIST_DIR, split="all"):
    """Fashion-MNIST from its IDX gz files. split: 'train' (60k), 'test' (10k) or 'all' (70k, train
    then test; extras['source_split'] tells which file each image came from)."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    parts, sources = [], []
    for i, prefix in enumerate(("train", "t10k")):
        if split == "all" or (split == "train") == (prefix == "train"):
            images = _read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"))
            labels = _read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))
            if len(images) != len(labels):
                raise ValueError(f"{directory}: {len(images)} {prefix} images but {len(labels)} labels")
            parts.append((images[..., None], labels.astype(np.int64)))
            sources.append(np.full(len(labels), i, np.int8))
    images = np.concatenate([p[0] for p in parts])
    labels = validate_labels(np.concatenate([p[1] for p in parts]), 10, False)
    return ImageSet(
        images, labels, 10, False, FASHION_MNIST_CLASSES, "fashion_mnist", {"source_split": np.concatenate(sources)}
    )


def load_tfds(name, split="train", data_dir=None, image_key="image", label_key="label", download=False):
    """Any TFDS image-classification dataset by name (prepared data, or tfds.testing.mock_data in
    tests). Multi-label features (a Sequence of ClassLabel) become multi-hot rows."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # noqa: BLE001 - tfds raises several kinds for an unknown name
        raise ValueError(f"unknown TFDS dataset {name!r}: {exc}") from None
    if download:
        builder.download_and_prepare()
    # as_dataset, not is_prepared(), decides: tfds.testing.mock_data patches the former only.
    try:
        ds = builder.as_dataset(split=split)
    except AssertionError as exc:  # tfds's "could not find data ... call download_and_prepare()"
        if "download_and_prepare" not in str(exc):
            raise
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; prepare it where there is internet "
            f'(python -c "import tensorflow_datasets as tfds; tfds.builder({name!r}).download_and_prepare()") '
            "and pass --data-dir to its directory"
        ) from None
    feature = builder.info.features[label_key]
    multi_label = isinstance(feature, tfds.features.Sequence)
    num_classes = (feature.feature if multi_label else feature).num_classes
    names = list((feature.feature if multi_label else feature).names)
    images, labels = [], []
    for ex in tfds.as_numpy(ds):
        images.append(ex[image_key])
        lab = ex[label_key]
        if multi_label:
            row = np.zeros(num_classes, np.float32)
            row[np.asarray(lab, np.int64)] = 1
            lab = row
        labels.append(lab)
    if not images:
        raise ValueError(f"TFDS dataset {name!r} split {split!r} is empty")
    return from_arrays(np.stack(images), np.stack(labels), num_classes, multi_label, names, name)
