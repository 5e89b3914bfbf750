"""A multi-label benchmark built from Fashion-MNIST, since none of the paper's multi-label sets
(NUS-WIDE, COCO) can be had here: 2x2 mosaics (56x56) of random items, labelled with the set of
classes present. Deterministic given the seed; every source image is used exactly once, train-file
images in train-file mosaics and test-file images in test-file mosaics (extras["source_split"]).

    python scripts/make_fashion_mosaics.py --out data/fashion_mosaics.npz
    coophash train --dataset npz:data/fashion_mosaics.npz ...     # or load_fashion_mosaics(path)
"""

import os

import numpy as np

from coophash_keras.data.image_set import ImageSet
from coophash_keras.data.loaders import FASHION_MNIST_CLASSES
from coophash_keras.io import atomic_path


def make_mosaics(images, labels, num_classes, seed=0):
    """uint8 [N, H, W, 1] images with class ids [N] -> (uint8 [N // 4, 2H, 2W, 1] mosaics,
    float32 multi-hot labels [N // 4, num_classes]): a seeded permutation, four images per mosaic."""
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images) // 4 * 4
    order = np.random.default_rng(seed).permutation(len(images))[:n].reshape(-1, 4)
    tiles = images[order]  # [M, 4, H, W, C]
    top = np.concatenate([tiles[:, 0], tiles[:, 1]], axis=2)
    bottom = np.concatenate([tiles[:, 2], tiles[:, 3]], axis=2)
    mosaics = np.concatenate([top, bottom], axis=1)
    multi_hot = np.zeros((len(order), num_classes), np.float32)
    np.put_along_axis(multi_hot, labels[order], 1.0, axis=1)
    return mosaics, multi_hot


def fashion_mosaics(fashion: ImageSet, seed=0) -> ImageSet:
    """Mosaics of `load_fashion_mnist(split='all')`: 15,000 from the train file, then 2,500 from
    the test file."""
    source = fashion.extras["source_split"]
    parts = [
        make_mosaics(fashion.images[source == s], fashion.labels[source == s], fashion.num_classes, seed + s)
        for s in (0, 1)
    ]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    split = np.concatenate([np.full(len(p[0]), s, np.int8) for s, p in enumerate(parts)])
    return ImageSet(
        images, labels, fashion.num_classes, True, FASHION_MNIST_CLASSES, "fashion_mosaics", {"source_split": split}
    )


def save_mosaics(mosaics: ImageSet, path):
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(
            tmp, images=mosaics.images, labels=mosaics.labels, source_split=mosaics.extras["source_split"]
        )


def load_fashion_mosaics(path) -> ImageSet:
    """The mosaics written by scripts/make_fashion_mosaics.py."""
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"missing data file {path}; build it with python scripts/make_fashion_mosaics.py --out {path}"
        )
    with np.load(path) as z:
        missing = {"images", "labels", "source_split"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not a mosaic file (missing arrays {sorted(missing)})")
        return ImageSet(
            z["images"],
            z["labels"].astype(np.float32),
            int(z["labels"].shape[1]),
            True,
            FASHION_MNIST_CLASSES,
            "fashion_mosaics",
            {"source_split": z["source_split"]},
        )
