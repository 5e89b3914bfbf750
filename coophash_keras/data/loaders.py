"""Image sets for hashing: digits (embedded), Fashion-MNIST IDX files, TFDS, numpy arrays, and
image files (folders, CSV: coophash_keras/data/files.py).

Every loader returns an ImageSet: uint8 images [N, H, W, C] (raw pixels), labels as int64 class
ids [N] or float32 multi-hot [N, C]. `ImageSet.as_dataset` gives the tf.data pipeline."""

import dataclasses
import gzip
import os
import struct
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from coophash_keras.data.validation import validate_images, validate_labels
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


@dataclasses.dataclass
class ImageSet:
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    multi_label: bool = False
    class_names: Sequence[str] | None = None
    name: str = "arrays"
    # Extra per-example arrays (e.g. "source_split": 0 = train file, 1 = test file).
    extras: dict = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.images)

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    def subset(self, indices):
        indices = np.asarray(indices)
        return dataclasses.replace(
            self,
            images=self.images[indices],
            labels=self.labels[indices],
            extras={k: v[indices] for k, v in self.extras.items()},
        )

    def as_dataset(self, batch_size, shuffle=False, seed=0, drop_remainder=False, repeat=False):
        """tf.data of (uint8 images, labels) batches. Use drop_remainder=True for training under a
        distribution strategy (an empty replica batch would make the metrics NaN)."""
        if len(self) == 0:
            raise ValueError(f"{self.name}: cannot make a dataset from 0 images")
        if drop_remainder and len(self) < batch_size:
            raise ValueError(
                f"{self.name}: {len(self)} images are fewer than one batch of {batch_size} "
                "with drop_remainder=True; lower the batch size"
            )
        ds = tf.data.Dataset.from_tensor_slices((self.images, self.labels))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def with_unlabeled(labeled_dataset, unlabeled_images, batch_size, seed=0):
    """Semi-supervised batches (images, labels, unlabeled_images): every labeled batch of
    `labeled_dataset` gets `batch_size` images drawn (shuffled, repeating) from the unlabeled pool.
    DSH-GAN's adversary uses them; CoopHash and the plain baseline ignore the third element."""
    unlabeled_images = np.asarray(unlabeled_images)
    if unlabeled_images.ndim != 4 or len(unlabeled_images) < batch_size:
        raise ValueError(
            f"unlabeled images must be [N, H, W, C] with N >= batch_size ({batch_size}), "
            f"got shape {unlabeled_images.shape}"
        )
    pool = (
        tf.data.Dataset.from_tensor_slices(unlabeled_images)
        .shuffle(min(len(unlabeled_images), 20000), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
    )
    return tf.data.Dataset.zip((labeled_dataset, pool)).map(lambda lab, u: (lab[0], lab[1], u))


def from_arrays(images, labels, num_classes=None, multi_label=False, class_names=None, name="arrays"):
    """Wrap numpy arrays (pixels in [0, 255]; [N, H, W] is taken as one channel). Without
    `num_classes` the classes are 0..the largest label, and a class id below it that no image has
    is an error: a stray label (99 among 0..9) would otherwise make a 100-class model."""
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] (or [N, H, W]), got shape {arr.shape}")
    arr = validate_images(arr, arr.shape[1:], "images")
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    inferred = num_classes is None
    if inferred:
        lab = np.asarray(labels)
        num_classes = lab.shape[1] if multi_label else int(lab.max()) + 1
    labels = validate_labels(labels, num_classes, multi_label, len(arr), what=f"{name} labels")
    if inferred and not multi_label:
        empty = np.setdiff1d(np.arange(num_classes), labels)
        if empty.size:
            raise ValueError(
                f"{name} labels: label {num_classes - 1} out of range of the classes present: classes are "
                f"inferred as 0..{num_classes - 1} (the largest label) and no image has class {_id_ranges(empty)}; "
                "relabel the classes as 0..N-1, or declare them (num_classes or class_names in an npz file)"
            )
    return ImageSet(arr, labels, int(num_classes), multi_label, class_names, name)


def _id_ranges(ids, most=5):
    """[3, 4, 5, 9] -> '3-5, 9' (the first `most` runs)."""
    runs = []
    for i in (int(i) for i in ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most]]
    return ", ".join(text) + (", ..." if len(runs) > most else "")


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


def load_dataset(name, data_dir=None, image_size=None, channels=None):
    """CLI entry: 'digits', 'fashion_mnist', 'fashion_mosaics' (data_dir/fashion_mosaics.npz, built by
    scripts/make_fashion_mosaics.py), 'npz:PATH' (arrays images, labels), 'tfds:NAME', or your own
    image files: 'folder:PATH', 'csv:PATH', 'images:PATH' (coophash_keras.data.files; those take
    image_size (H, W) and channels 1|3, the others have a fixed shape)."""
    from coophash_keras.data.files import is_file_dataset, load_file_dataset

    if is_file_dataset(name):
        return load_file_dataset(name, image_size=image_size, channels=channels)
    if image_size is not None or channels is not None:
        raise ValueError(
            f"--image-size and --channels apply to folder:, csv: and images: datasets; {name} has a fixed shape"
        )
    if name == "digits":
        return load_digits()
    if name in ("fashion_mnist", "fashion-mnist"):
        return load_fashion_mnist(data_dir or FASHION_MNIST_DIR)
    if name in ("fashion_mosaics", "fashion-mosaics"):
        from coophash_keras.data.mosaics import load_fashion_mosaics

        return load_fashion_mosaics(os.path.join(data_dir or "data", "fashion_mosaics.npz"))
    if name.startswith("npz:"):
        return load_npz(name[4:])
    if name.startswith("tfds:"):
        return load_tfds(name[5:], data_dir=data_dir)
    raise ValueError(
        f"unknown dataset {name!r}: use digits, fashion_mnist, fashion_mosaics, npz:PATH, tfds:NAME, folder:PATH, "
        "csv:PATH or images:PATH"
    )
