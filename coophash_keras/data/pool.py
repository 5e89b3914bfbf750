"""An unlabelled pool given apart from the labelled data: `coophash train --unlabeled DATASET`,
`RunSpec(unlabeled=...)`.

Any data set name `load_dataset` takes can be a pool; its labels, if it has any, are ignored.
  images:PATH, folder:PATH   every image file under PATH (class subfolders included);
  csv:PATH                   the files the CSV lists;
  digits, fashion_mnist, npz:PATH, tfds:NAME   the arrays, in memory (they are in memory anyway).

A file pool is never decoded up front: `load_pool` lists the files and reads each one's header
(PIL reads a few hundred bytes), and `UnlabeledPool.dataset` shuffles the file names and decodes
each image in the tf.data pipeline, with the same `decode_image` and to the same size and channels
as the labelled images, so memory stays bounded whatever the pool's size (one shuffle buffer of
file names, a few batches of pixels). Bad files follow the package's policy (data/files.py): a
file whose header cannot be read is skipped with one warning line naming the files and reasons; a
file that fails only while it is decoded (a truncated image) is skipped with one warning line
naming it; an empty pool, or one without a readable image, is an ImageFileError.

`record()` is what a run directory keeps about the pool (run.json, and a backup's config): its
name, how many images, and a fingerprint (file pools: of the file paths, like the labelled data's;
array pools: of the pixels), so a resumed run can tell that it is still the same pool."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from coophash_keras.data.files import (
    IMAGE_EXTENSIONS,
    BadImage,
    ImageFileError,
    _is_image_name,
    _listing,
    _read_csv_rows,
    _require_dir,
    _walk,
    is_file_dataset,
    print_warning,
    probe_image,
)

SHUFFLE_BUFFER_IMAGES = 20000  # an array pool's shuffle buffer (a file pool shuffles all its file names)


@dataclasses.dataclass
class UnlabeledPool:
    """An unlabelled pool: file paths decoded on the fly (`paths`) or uint8 arrays (`images`), both
    at `image_shape` (H, W, C), the labelled data's."""

    name: str
    image_shape: tuple
    paths: np.ndarray | None = None
    images: np.ndarray | None = None
    warn: object = print_warning

    def __len__(self):
        return len(self.paths) if self.paths is not None else len(self.images)

    @property
    def streamed(self) -> bool:
        return self.paths is not None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        if self.streamed:
            for path in self.paths:
                digest.update(str(path).encode("utf-8") + b"\0")
        else:
            digest.update(np.ascontiguousarray(self.images).tobytes())
        return digest.hexdigest()[:16]

    def record(self) -> dict:
        """What run.json keeps: the name, the image count, the fingerprint, and how it was read."""
        h, w, c = self.image_shape
        return {
            "dataset": self.name,
            "num_images": len(self),
            "fingerprint": self.fingerprint(),
            "image_size": [int(h), int(w)],
            "channels": int(c),
            "streamed": self.streamed,
        }

    def rows(self):
        """The pool as an ImageSet (unlabelled rows), so that it streams through the one pipeline."""
        from coophash_keras.data.files import UNLABELED
        from coophash_keras.data.image_set import ImageSet

        extras = {"paths": self.paths} if self.streamed else {}
        labels = np.full(len(self), UNLABELED, np.int64)
        return ImageSet(self.images, labels, 0, False, [], self.name, extras, self.image_shape, self.warn)

    def dataset(self, batch_size, seed=0, shuffle=True, repeat=True, drop_remainder=True):
        """tf.data of uint8 [batch_size, H, W, C] pool batches: shuffled (each pass anew) and
        repeated for training; `shuffle=False, repeat=False` for one pass in order (fitting). A file
        pool shuffles all its file names; an array pool uses a buffer of SHUFFLE_BUFFER_IMAGES."""
        buffer = len(self) if self.streamed else min(len(self), SHUFFLE_BUFFER_IMAGES)
        return self.rows().image_batches(
            batch_size, shuffle=shuffle, seed=seed, repeat=repeat, drop_remainder=drop_remainder, shuffle_buffer=buffer
        )


def _pool_files(name):
    """(candidate paths, display names, skipped (name, reason)) of a file data set, undecoded."""
    kind, _, root = name.partition(":")
    if not root:
        raise ImageFileError(f"--unlabeled {name!r} names no path: use {kind}:PATH")
    skipped, paths, names = [], [], []
    if kind == "csv":
        base = os.path.dirname(root)
        for _, rel, _ in _read_csv_rows(root, name):
            path = os.path.normpath(os.path.join(base, rel))
            if os.path.isfile(path):
                paths.append(path)
                names.append(rel)
            else:
                skipped.append((rel, "missing"))
        return paths, names, skipped
    _require_dir(root, name)
    for rel in _walk(root):
        if _is_image_name(rel):
            paths.append(os.path.join(root, rel))
            names.append(rel)
        else:
            skipped.append((rel, "not an image file"))
    return paths, names, skipped


def load_pool(name, image_shape, data_dir=None, warn=print_warning) -> UnlabeledPool:
    """The pool `name` (any data set name; see the module docstring) at the labelled images'
    `image_shape` (H, W, C). File pools are listed and their headers read, nothing decoded."""
    shape = tuple(int(d) for d in image_shape)
    what = f"--unlabeled {name}"
    if not is_file_dataset(name):
        from coophash_keras.data.datasets import load_dataset

        data = load_dataset(name, data_dir)
        if len(data) == 0:
            raise ImageFileError(f"{what}: the pool is empty")
        if tuple(data.image_shape) != shape:
            raise ImageFileError(
                f"{what}: its images are {'x'.join(map(str, data.image_shape))}, the labelled images "
                f"{'x'.join(map(str, shape))}; a pool must have the labelled images' size and channels"
            )
        return UnlabeledPool(name, shape, images=data.images, warn=warn)
    paths, names, skipped = _pool_files(name)
    if not paths:
        raise ImageFileError(f"{what}: the pool is empty (no image files; looked for {', '.join(IMAGE_EXTENSIONS)})")
    total = len(paths) + len(skipped)
    kept, converted, resized = [], 0, 0
    for path, shown in zip(paths, names):
        try:
            channels, size = probe_image(path)
        except BadImage as exc:
            skipped.append((shown, str(exc)))
            continue
        converted += channels != shape[2]
        resized += tuple(size) != shape[:2]
        kept.append(path)
    if not kept:
        raise ImageFileError(f"{what}: no readable images: {_listing(skipped)}")
    if skipped:
        warn(f"{what}: skipped {len(skipped)} of {total} files: {_listing(skipped)}")
    if converted or resized:
        warn(
            f"{what}: {converted} image(s) will be converted to {shape[2]} channel(s) and {resized} resized to "
            f"{shape[0]}x{shape[1]}, as the labelled images are"
        )
    return UnlabeledPool(name, shape, paths=np.asarray(kept, dtype=str), warn=warn)


def pool_overlap(pool, data, indices) -> int:
    """How many pool images are also items `indices` of `data` (queries, database): file pools by
    real path against the data's file paths, array pools by their pixels against in-memory data."""
    if pool.streamed:
        paths = data.extras.get("paths") if hasattr(data, "extras") else None
        if paths is None:
            return 0
        mine = {os.path.realpath(p) for p in pool.paths}
        return sum(os.path.realpath(str(p)) in mine for p in np.asarray(paths)[indices])
    if tuple(data.image_shape) != tuple(pool.image_shape) or getattr(data, "streamed", False):
        return 0  # (an array pool against file rows is not compared: that would decode them all)
    seen = {hashlib.sha1(img.tobytes()).digest() for img in data.images[indices]}
    return sum(hashlib.sha1(img.tobytes()).digest() in seen for img in pool.images)
