"""The image set every loader returns, and the one tf.data pipeline made from it.

A data set is a table of rows with their labels (int64 class ids [N] or float32 multi-hot [N, C]).
A row is either an in-memory uint8 image (`images` [N, H, W, C]: digits, Fashion-MNIST, npz, TFDS)
or an image file (`extras["paths"]`, with `images` None: folder:, csv:, images:), decoded in the
pipeline by data/files.py's `decode_image` at `shape` (H, W, C), batch by batch, so that only paths,
labels and codes are ever held whole. `as_dataset` is the one pipeline for both kinds: training,
evaluation, encoding and indexing all read a set through it.

A file that cannot be decoded mid-stream is skipped, never fatal: it is named in one warning line
(`StreamDecoder`), dropped from training batches, and reported as not `ok` to an encoding pass
(`as_dataset(rows=True)`), which counts them at the end.

A module of its own so that the loaders (loaders.py, files.py, mosaics.py) all import it and none
imports another."""

import dataclasses
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from coophash_keras.data.validation import validate_images, validate_labels


def _warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


class StreamDecoder:
    """decode_image of one file row inside the pipeline: (pixels, True), or (zeros, False) for a
    file that cannot be decoded, named in one warning line the first time. `bad` holds their paths."""

    def __init__(self, name, shape, warn=_warn):
        self.name, self.shape, self.warn = name, tuple(int(d) for d in shape), warn
        self.bad = set()

    def __call__(self, path):
        from coophash_keras.data.files import BadImage, decode_image

        path = path.decode("utf-8", "surrogateescape") if isinstance(path, bytes) else str(path)
        try:
            return decode_image(path, self.shape[:2], self.shape[2]), np.bool_(True)
        except BadImage as exc:
            if path not in self.bad:
                self.bad.add(path)
                self.warn(f"{self.name}: skipped {path} ({exc})")
            return np.zeros(self.shape, np.uint8), np.bool_(False)


def _is_ok(image, label, ok):
    return ok


def _drop_ok(image, label, ok):
    return image, label


@dataclasses.dataclass
class ImageSet:
    images: np.ndarray | None  # uint8 [N, H, W, C], or None: the rows are the files extras["paths"]
    labels: np.ndarray
    num_classes: int
    multi_label: bool = False
    class_names: Sequence[str] | None = None
    name: str = "arrays"
    # Extra per-row arrays (e.g. "source_split": 0 = train file, 1 = test file; "paths": file rows).
    extras: dict = dataclasses.field(default_factory=dict)
    shape: tuple | None = None  # (H, W, C) the file rows are decoded to; in-memory rows have theirs
    warn: object = dataclasses.field(default=_warn, repr=False, compare=False)

    def __post_init__(self):
        if self.images is None and (self.shape is None or "paths" not in self.extras):
            raise ValueError("an ImageSet without images needs extras['paths'] (its file rows) and a shape (H, W, C)")

    def __len__(self):
        return len(self.labels)

    @property
    def streamed(self) -> bool:
        """True when the rows are files, decoded in the pipeline."""
        return self.images is None

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.shape) if self.streamed else tuple(self.images.shape[1:])

    def subset(self, indices):
        indices = np.asarray(indices, np.int64)
        return dataclasses.replace(
            self,
            images=None if self.streamed else self.images[indices],
            labels=self.labels[indices],
            extras={k: v[indices] for k, v in self.extras.items()},
        )

    def as_dataset(
        self, batch_size, shuffle=False, seed=0, drop_remainder=False, repeat=False, rows=False, shuffle_buffer=None
    ):
        """The pipeline: tf.data of (uint8 images, labels) batches, rows decoded on the fly when they
        are files (parallel map, in order, prefetched). Undecodable files are dropped (named once).
        rows=True (one pass in order, for encoding): batches of (images, labels, row indices, ok)
        with every row kept in place, a bad file as zeros with ok False, so that batch b is always
        rows [b * batch_size, (b + 1) * batch_size) and a pass can be cut and resumed at a batch.
        shuffle_buffer: default the whole set. Use drop_remainder=True for training under a
        distribution strategy (an empty replica batch would make the metrics NaN)."""
        if len(self) == 0:
            raise ValueError(f"{self.name}: cannot make a dataset from 0 images")
        if drop_remainder and len(self) < batch_size:
            raise ValueError(
                f"{self.name}: {len(self)} images are fewer than one batch of {batch_size} "
                "with drop_remainder=True; lower the batch size"
            )
        source = np.asarray(self.extras["paths"], dtype=str) if self.streamed else self.images
        columns = (source, self.labels, np.arange(len(self), dtype=np.int64)) if rows else (source, self.labels)
        ds = tf.data.Dataset.from_tensor_slices(columns)
        if shuffle:  # file rows: a buffer of the whole set costs a few bytes per file name
            ds = ds.shuffle(shuffle_buffer or len(self), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        if self.streamed:
            ds = self._decoded(ds, rows)
        elif rows:
            ds = ds.map(lambda image, label, row: (image, label, row, tf.constant(True)))
        prefetch = 2 if self.streamed else tf.data.AUTOTUNE
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(prefetch)

    def _decoded(self, ds, rows):
        shape = self.image_shape
        self.decoder = StreamDecoder(self.name, shape, self.warn)  # the last pipeline's bad files

        def decode(path, *rest):
            image, ok = tf.numpy_function(self.decoder, [path], (tf.uint8, tf.bool), stateful=False)
            return (tf.ensure_shape(image, shape), *rest, tf.ensure_shape(ok, []))

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if rows:
            return ds
        return ds.filter(_is_ok).map(_drop_ok)

    def image_batches(self, batch_size, **kwargs):
        """as_dataset's images only (no labels)."""
        return self.as_dataset(batch_size, **kwargs).map(lambda images, labels: images)

    def pixels(self, indices=None, batch_size=256):
        """uint8 [n, H, W, C] of rows `indices` (default all), decoded through the pipeline; a file
        that cannot be decoded gives zeros. For a few rows (a contact sheet, a diagnostic's sample):
        it holds them all in memory."""
        part = self if indices is None else self.subset(indices)
        if not part.streamed:
            return part.images
        if len(part) == 0:
            return np.zeros((0, *self.image_shape), np.uint8)
        return np.concatenate([b[0].numpy() for b in part.as_dataset(batch_size, rows=True)])


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
