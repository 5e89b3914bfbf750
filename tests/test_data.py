import gzip
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from coophash_keras.data import (
    RetrievalSplit,
    from_arrays,
    load_dataset,
    load_fashion_mnist,
    load_tfds,
    retrieval_split,
    validate_images,
    validate_labels,
)


def test_digits_loader(digits):
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.labels.dtype == np.int64 and digits.num_classes == 10
    ds = digits.as_dataset(64, drop_remainder=True)
    images, labels = next(iter(ds))
    assert images.shape == (64, 8, 8, 1) and images.dtype == tf.uint8 and labels.shape == (64,)
    assert int(ds.cardinality()) == 1797 // 64


@pytest.mark.parametrize("train_per_class,database", [(None, "rest"), (5, "rest"), (5, "disjoint")])
def test_split_counts_and_disjointness(digits, train_per_class, database):
    sp = retrieval_split(digits.labels, 20, train_per_class, database=database, seed=3)
    counts = np.bincount(digits.labels[sp.query], minlength=10)
    assert (counts == 20).all()
    assert not np.intersect1d(sp.query, sp.train).size and not np.intersect1d(sp.query, sp.database).size
    assert not np.intersect1d(sp.train, sp.unlabeled).size
    if train_per_class:
        assert (np.bincount(digits.labels[sp.train], minlength=10) == train_per_class).all()
        assert len(sp.unlabeled) == 1797 - 200 - 50
    else:
        assert len(sp.train) == 1797 - 200 and len(sp.unlabeled) == 0
    expected_db = 1797 - 200 - (len(sp.train) if database == "disjoint" else 0)
    assert len(sp.database) == expected_db
    # same seed, same split; other seed, other split
    again = retrieval_split(digits.labels, 20, train_per_class, database=database, seed=3)
    np.testing.assert_array_equal(again.query, sp.query)
    assert not np.array_equal(retrieval_split(digits.labels, 20, seed=4).query, sp.query)


def test_split_save_load_and_candidates(tmp_path, digits):
    sp = retrieval_split(
        digits.labels, 5, 3, seed=0, query_candidates=np.arange(900), train_candidates=np.arange(900, 1797)
    )
    assert sp.query.max() < 900 and sp.train.min() >= 900 and sp.unlabeled.min() >= 900
    sp.save(tmp_path / "s.npz")
    back = RetrievalSplit.load(tmp_path / "s.npz")
    assert back.counts() == sp.counts()
    with pytest.raises(ValueError, match="fewer than"):
        retrieval_split(digits.labels, 500)


def test_multi_label_split_and_dataset():
    rng = np.random.default_rng(0)
    labels = (rng.random((300, 4)) > 0.6).astype(np.float32)
    labels[labels.sum(1) == 0, 0] = 1
    sp = retrieval_split(labels, 5, 10, seed=1)
    assert len(sp.query) == 20 and len(sp.train) == 40
    ims = from_arrays(rng.integers(0, 256, (300, 8, 8, 3)), labels, multi_label=True)
    assert ims.multi_label and ims.labels.shape == (300, 4)


def write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_loader(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    data = load_fashion_mnist(str(tmp_path))
    assert data.images.shape == (17, 28, 28, 1) and data.extras["source_split"].tolist() == [0] * 12 + [1] * 5
    assert len(load_fashion_mnist(str(tmp_path), split="test")) == 5
    # truncated file -> clear error
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(str(tmp_path), split="test")


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_dataset("npz:" + str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet21k")


@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_from_debian_package():
    data = load_fashion_mnist(split="test")
    assert data.images.shape == (10000, 28, 28, 1) and set(np.unique(data.labels)) == set(range(10))


def test_tfds_loader_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path)):
        data = load_tfds("mnist", split="train")
    assert data.images.shape == (12, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.num_classes == 10 and data.labels.shape == (12,)


def test_npz_loader(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.array([0, 1, 2, 1]))
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.num_classes == 3 and len(data) == 4


def test_npz_classes_are_declared_or_inferred_without_gaps(tmp_path, digits):
    labels = digits.labels.copy()
    labels[5] = 99  # one stray label
    images = digits.images[..., 0]  # [N, 8, 8]: one channel
    np.savez(tmp_path / "inferred.npz", images=images, labels=labels)
    with pytest.raises(ValueError, match=r"label 99 out of range.*no image has class 10-98"):
        load_dataset(f"npz:{tmp_path / 'inferred.npz'}")  # not a 100-class dataset
    np.savez(tmp_path / "declared.npz", images=images, labels=labels, num_classes=10)
    with pytest.raises(ValueError, match=r"label 99 out of range: class ids must be in \[0, 9\] \(1 of 1797"):
        load_dataset(f"npz:{tmp_path / 'declared.npz'}")
    names = np.array(list("abcdefghijkl"))
    np.savez(tmp_path / "named.npz", images=images, labels=digits.labels, class_names=names)  # 12 classes, 2 empty
    data = load_dataset(f"npz:{tmp_path / 'named.npz'}")
    assert data.num_classes == 12 and list(data.class_names) == list(names) and data.image_shape == (8, 8, 1)
    np.savez(tmp_path / "both.npz", images=images, labels=digits.labels, class_names=names, num_classes=10)
    with pytest.raises(ValueError, match="num_classes is 10 but class_names has 12"):
        load_dataset(f"npz:{tmp_path / 'both.npz'}")
    with pytest.raises(ValueError, match="class 2 has no images, fewer than the 5 query images per class"):
        retrieval_split(np.repeat([0, 1, 3], 6), 5)  # the split names the class it cannot fill
    with pytest.raises(ValueError, match="class 0 has only 1 of its 6 images left, fewer than the 5 labeled"):
        retrieval_split(np.repeat(np.arange(4), 6), 5, 5)


@pytest.mark.parametrize(
    "images,match",
    [
        (np.zeros((2, 8, 8, 1, 1)), "rank 4"),
        (np.zeros((2, 7, 8, 1)), "8x8"),
        (np.zeros((2, 8, 8, 3)), "channel"),
        (np.array([["a"]]), "numeric"),
        (np.zeros((0, 8, 8, 1)), "empty"),
        (np.full((2, 8, 8, 1), 300.0), "range"),
        (np.full((2, 8, 8, 1), np.nan), "NaN"),
        (np.random.rand(4, 8, 8, 1), "normalised"),
    ],
)
def test_bad_images_are_named(images, match):
    with pytest.raises(ValueError, match=match):
        validate_images(images, (8, 8, 1))


@pytest.mark.parametrize(
    "labels,multi,match",
    [
        (np.array([0, 10]), False, "out of range"),
        (np.array([-1, 2]), False, "out of range"),
        (np.array([0.5, 1]), False, "integer"),
        (np.zeros((2, 3)), False, "shape"),
        (np.zeros((2, 3)), True, r"\[N, 10\]"),
        (np.full((2, 10), 2), True, "only 0 and 1"),
    ],
)
def test_bad_labels_are_named(labels, multi, match):
    with pytest.raises(ValueError, match=match):
        validate_labels(labels, 10, multi)


def test_corruptions_keep_shape_and_dtype_change_pixels_and_are_seeded(digits):
    from coophash_keras.data.corruptions import CORRUPTIONS, corrupt

    images = (digits.images[:64] * (255 / 16)).astype(np.uint8)
    for kind in CORRUPTIONS + ("mixed",):
        out = corrupt(images, kind, seed=3)
        assert out.shape == images.shape and out.dtype == np.uint8, kind
        assert np.abs(out.astype(int) - images).mean() > 2, kind  # visibly corrupted
        np.testing.assert_array_equal(out, corrupt(images, kind, seed=3))
    # contrast keeps each image's mean; blur keeps total intensity away from the borders
    c = corrupt(images, "contrast")
    np.testing.assert_allclose(c.reshape(64, -1).mean(1), images.reshape(64, -1).mean(1), atol=1.0)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(images, "fog")
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        corrupt(images[0], "noise")
