"""The in-memory image set every loader returns (uint8 images [N, H, W, C] of raw pixels, labels as
int64 class ids [N] or float32 multi-hot [N, C]) and its tf.data pipelines. A module of its own so
that the loaders (loaders.py, files.py, mosaics.py) all import it and none imports another."""

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from coophash_keras.data.validation import validate_images, validate_labels


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
    return with_pool(labeled_dataset, pool)


def with_pool(labeled_dataset, pool_batches):
    """(images, labels, unlabeled) batches: each labelled batch with the next batch of
    `pool_batches` (an endless tf.data of uint8 pool batches, e.g. UnlabeledPool.dataset)."""
    return tf.data.Dataset.zip((labeled_dataset, pool_batches)).map(lambda lab, u: (lab[0], lab[1], u))


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
