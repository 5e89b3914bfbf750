"""Input checks that name the problem before any TensorFlow op sees bad data."""

import numpy as np
import tensorflow as tf

_MAX_BATCHES_CHECKED = 8


def validate_images(images, image_shape, what="images"):
    """Return `images` as a numpy array [N, H, W, C] of raw pixel values in [0, 255], or raise a
    ValueError naming what is wrong (rank, shape, channels, dtype, range, emptiness)."""
    try:
        arr = np.asarray(images)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(f"{what} could not be read as an array: {exc}") from None
    h, w, c = image_shape
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{what} must be numeric pixel values (uint8 or float), got dtype {arr.dtype}")
    if arr.ndim == 3 and c == 1 and arr.shape[1:] == (h, w):
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"{what} must have rank 4 [N, H, W, C] = [N, {h}, {w}, {c}], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 images)")
    if arr.shape[3] != c:
        raise ValueError(f"{what} must have {c} channel(s), got {arr.shape[3]} (shape {arr.shape})")
    if arr.shape[1:3] != (h, w):
        raise ValueError(f"{what} must be {h}x{w}, got {arr.shape[1]}x{arr.shape[2]} (shape {arr.shape})")
    _check_pixel_range(arr, what)
    return arr


def _check_pixel_range(arr, what):
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what} contain NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} must be raw pixel values in [0, 255], got range [{lo:g}, {hi:g}]")
        if hi <= 1.0 and arr.size > 16:
            raise ValueError(
                f"{what} look already normalised (all values in [0, 1]); pass raw pixel "
                "values in [0, 255] - the model normalises them itself"
            )
    elif np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.uint8:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} must be raw pixel values in [0, 255], got range [{lo}, {hi}]")


def validate_labels(labels, num_classes, multi_label, num_examples=None, what="labels"):
    """Return labels as int64 [N] class ids (single-label) or float32 [N, C] multi-hot."""
    arr = np.asarray(labels)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool
    ):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    if num_examples is not None and len(arr) != num_examples:
        raise ValueError(f"{what} has {len(arr)} entries but there are {num_examples} images")
    if multi_label:
        if arr.ndim != 2 or arr.shape[1] != num_classes:
            raise ValueError(f"multi-label {what} must be multi-hot [N, {num_classes}], got shape {arr.shape}")
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"multi-hot {what} must contain only 0 and 1")
        return arr.astype(np.float32)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{what} must be class ids of shape [N] (or set multi_label for multi-hot), got shape {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating) and (not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr))):
        raise ValueError(f"{what} must be integer class ids, got non-integer values")
    outside = (arr < 0) | (arr >= num_classes)
    if outside.any():
        raise ValueError(
            f"{what}: label {int(arr[outside][0])} out of range: class ids must be in [0, {num_classes - 1}] "
            f"({int(outside.sum())} of {arr.size} labels outside, min {arr.min()} max {arr.max()})"
        )
    return arr.astype(np.int64)


def _check_spec(element_spec, config):
    if not isinstance(element_spec, (tuple, list)) or len(element_spec) < 2:
        raise ValueError(f"the training dataset must yield (images, labels) tuples, got element spec {element_spec}")
    img_spec, lab_spec = element_spec[0], element_spec[1]
    h, w, c = config.image_shape
    shape = img_spec.shape
    if shape.rank != 4:
        raise ValueError(
            f"dataset images must be batched with rank 4 [batch, {h}, {w}, {c}], got shape {shape}"
            " (did you forget .batch()?)"
        )
    if shape[3] is not None and shape[3] != c:
        raise ValueError(f"dataset images must have {c} channel(s), got shape {shape}")
    if (shape[1], shape[2]) != (h, w) and None not in (shape[1], shape[2]):
        raise ValueError(f"dataset images must be {h}x{w}, got shape {shape}")
    if not (img_spec.dtype.is_integer or img_spec.dtype.is_floating):
        raise ValueError(f"dataset images must be numeric (uint8 or float), got {img_spec.dtype.name}")
    if len(element_spec) > 2 and hasattr(element_spec[2], "shape") and element_spec[2].shape.rank == 4:
        u = element_spec[2].shape  # semi-supervised batches (images, labels, unlabeled images)
        if (u[1], u[2], u[3]) != (shape[1], shape[2], shape[3]):
            raise ValueError(f"dataset unlabeled images must have the labeled images' shape {shape}, got {u}")
    want_rank = 2 if config.multi_label else 1
    if lab_spec.shape.rank != want_rank:
        kind = f"multi-hot [batch, {config.num_classes}]" if config.multi_label else "class ids [batch]"
        raise ValueError(f"dataset labels must be {kind}, got shape {lab_spec.shape}")


def validate_fit_data(x, y, config):
    """Check what `fit` is given: a tf.data.Dataset of (images, labels) batches, or arrays.
    Returns (x, y) to train on: a dataset as it is, arrays as validated (validate_images gives
    [N, H, W] one-channel images their channel axis, validate_labels gives class ids [N])."""
    if isinstance(x, tf.data.Dataset):
        _check_spec(x.element_spec, config)
        if int(x.cardinality()) == 0:
            raise ValueError("the training dataset is empty (0 batches)")
        seen = 0
        for batch in x.take(_MAX_BATCHES_CHECKED):
            images, labels = batch[0].numpy(), batch[1].numpy()
            _check_pixel_range(images, "dataset images")
            if len(batch) > 2 and batch[2].shape.rank == 4:
                _check_pixel_range(batch[2].numpy(), "dataset unlabeled images")
            validate_labels(labels, config.num_classes, config.multi_label, len(images), "dataset labels")
            seen += 1
        if seen == 0:
            raise ValueError("the training dataset is empty (it yielded no batch)")
        return x, y
    if x is None:
        raise ValueError("fit needs training data: a tf.data.Dataset of (images, labels) or arrays x, y")
    images = validate_images(x, config.image_shape)
    if y is None:
        raise ValueError("fit needs labels: pass y, or a dataset yielding (images, labels)")
    return images, validate_labels(y, config.num_classes, config.multi_label, len(images))
