"""The reference classifier: a measuring instrument for generated images, never part of a model.

A small CNN trained on a data set's labelled training images. It tells which class a generated
image looks like (class consistency) and gives the feature space of the Fréchet distance. Its own
accuracy on held-out real images is the ceiling that class consistency is compared with.

Which images train it and which are held out (`reference_split`):
  fashion_mnist  the official train file trains it; the official test file is held out;
  other data     a seeded half of every class trains it; the other half is held out.
The trained classifier is cached on disk (`COOPHASH_CACHE`, default ~/.cache/coophash-keras),
keyed by the data's fingerprint, so every diagnosis of one data set uses the same instrument.

It trains and is scored through the data set's one pipeline (`ImageSet.as_dataset`), batch by batch:
a file data set of any size is never held in memory, only its paths and labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

FEATURE_DIM = 32  # the Fréchet distance's feature dimension (the penultimate layer's width)
REFERENCE_SEED = 20261203  # fixed: the instrument must not change with a run's seed


def cache_dir():
    return os.environ.get("COOPHASH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "coophash-keras")


@dataclasses.dataclass
class ReferenceSplit:
    """Indices into an ImageSet: `train` fits the reference classifier, `held_out` is what the
    generator's samples are compared with."""

    train: np.ndarray
    held_out: np.ndarray


def reference_split(data) -> ReferenceSplit:
    """The fixed split of a single-label ImageSet into the instrument's training and held-out images."""
    if data.multi_label:
        raise ValueError("generator diagnostics need single-label data (a class per generated image)")
    source = data.extras.get("source_split")
    if source is not None and data.name == "fashion_mnist":
        return ReferenceSplit(np.flatnonzero(source == 0), np.flatnonzero(source == 1))
    rng = np.random.default_rng(REFERENCE_SEED)
    train, held = [], []
    for c in range(data.num_classes):
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        half = len(idx) // 2
        train.append(idx[:half])
        held.append(idx[half:])
    return ReferenceSplit(np.sort(np.concatenate(train)), np.sort(np.concatenate(held)))


def warn_once(data):
    """`data` with its warnings given once each over all of its pipelines: every pass of the
    diagnostics (training, scoring, spread, ...) is a pipeline of its own, whose decoder would name
    the same undecodable file again."""
    if not data.streamed or getattr(data.warn, "once", False):
        return data
    seen, warn = set(), data.warn

    def once(message):
        if message not in seen:
            seen.add(message)
            warn(message)

    once.once = True
    return dataclasses.replace(data, warn=once)


def _fingerprint(data, split):
    """The cache key's hash of the training rows. A file set: its paths and labels (data/files.py's
    `fingerprint`, what a run records), the decode shape and the split, so that no pixel is read.
    An in-memory set: the training pixels and labels themselves, as before (caches stay valid)."""
    h = hashlib.sha256()
    if data.streamed:
        from coophash_keras.data.files import fingerprint

        h.update(f"{fingerprint(data)} {data.image_shape}".encode())
        h.update(np.ascontiguousarray(split.train, np.int64).tobytes())
        h.update(np.ascontiguousarray(split.held_out, np.int64).tobytes())
        return h.hexdigest()[:16]
    images = data.images[split.train]
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(data.labels[split.train]).tobytes())
    return h.hexdigest()[:16]


def _build(image_shape, num_classes):
    import keras
    from keras import layers

    h, w, _ = image_shape
    inputs = keras.Input(image_shape)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    if min(h, w) >= 16:
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    features = layers.Dense(FEATURE_DIM, activation="relu", name="features")(x)
    logits = layers.Dense(num_classes, name="logits")(layers.Dropout(0.2)(features))
    return keras.Model(inputs, [logits, features], name="reference_classifier")


class ReferenceClassifier:
    """A trained reference CNN. `predict(images)` -> (logits, features) of uint8/float pixel
    images in [0, 255] at the data's image shape, or of an ImageSet's rows (streamed); `accuracy`
    is its accuracy on the held-out images it was not trained on.

    Example:
        data = load_dataset("digits")
        ref = ReferenceClassifier.for_data(data)
        logits, features = ref.predict(data.images[:10])
    """

    def __init__(self, network, accuracy, image_shape, num_classes):
        self.network = network
        self.accuracy = float(accuracy)
        self.image_shape = tuple(image_shape)
        self.num_classes = int(num_classes)

    @classmethod
    def train(cls, train_set, held_out_set, epochs=None, verbose=0):
        """Trains the reference CNN on the ImageSet `train_set` and scores it on `held_out_set`.

        Both are read through `as_dataset`, batch by batch; the training batches are shuffled with
        `REFERENCE_SEED` (for in-memory rows the same order as a `from_tensor_slices` of the array),
        and a file that cannot be decoded is given no weight.

        Args:
            train_set: single-label ImageSet the classifier learns from.
            held_out_set: single-label ImageSet of the same shape; `accuracy` is measured on it.
            epochs: default about 6,000 optimizer steps at batch 64, between 6 and 60 epochs.
            verbose: Keras `fit` verbosity.
        """
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(REFERENCE_SEED)  # before the pipeline: its shuffle reads the global seed
        net = _build(train_set.image_shape, train_set.num_classes)
        # Trained on the logits only; the features follow.
        trainer = keras.Model(net.input, net.output[0])
        trainer.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if epochs is None:  # about 6,000 optimizer steps at batch 64 on a small set, 6 epochs on a large one
            epochs = int(np.clip(6000 * 64 // max(len(train_set), 1), 6, 60))
        # rows=True keeps every row (an undecodable file is zeros with weight 0), so the pipeline's
        # length is known and each epoch starts a fresh shuffle as for an array: a filtered pipeline of
        # unknown length trains on another order from the second epoch on.
        ds = train_set.as_dataset(64, shuffle=True, seed=REFERENCE_SEED, rows=True)
        ds = ds.map(lambda images, labels, rows, ok: (images, labels, tf.cast(ok, tf.float32)))
        trainer.fit(ds, epochs=epochs, verbose=verbose)
        ref = cls(net, 0.0, train_set.image_shape, train_set.num_classes)
        ref.accuracy = float(np.mean(ref.classify(held_out_set) == held_out_set.labels))
        return ref

    @classmethod
    def for_data(cls, data, split: ReferenceSplit | None = None, cache=True, verbose=0):
        """The reference classifier of an ImageSet, trained once and cached (see the module docstring)."""
        import keras

        split = split or reference_split(data)
        data = warn_once(data)
        key = f"reference-{data.name.replace(':', '_').replace('/', '_')[-40:]}-{_fingerprint(data, split)}"
        path = os.path.join(cache_dir(), key + ".keras")
        if cache and os.path.exists(path) and os.path.exists(path + ".json"):
            with open(path + ".json") as fh:
                meta = json.load(fh)
            return cls(
                keras.models.load_model(path, compile=False), meta["accuracy"], data.image_shape, data.num_classes
            )
        if verbose:
            print(
                f"training the reference classifier on {len(split.train)} {data.name} images (cached in {path})",
                flush=True,
            )
        ref = cls.train(data.subset(split.train), data.subset(split.held_out))
        if cache:
            from coophash_keras.io import atomic_path, atomic_write_json

            with atomic_path(path, ".keras") as tmp:
                ref.network.save(tmp)
            atomic_write_json(path + ".json", {"accuracy": ref.accuracy, "train_images": int(len(split.train))})
        return ref

    def predict(self, images, batch_size=512):
        """(logits [N, C], features [N, FEATURE_DIM]) of `images`, in batches of `batch_size`.

        Args:
            images: uint8/float pixels [N, H, W, C] in [0, 255], or an ImageSet, read through its
                pipeline in order (`as_dataset(rows=True)`: a file that cannot be decoded is a row
                of zeros, as in `ImageSet.pixels`), so that only one batch is decoded at a time.
            batch_size: images per network call; the same rows in the same batches give the same
                numbers bit for bit.
        """
        from coophash_keras.data import ImageSet

        rows = isinstance(images, ImageSet)
        shape = tuple(images.image_shape if rows else np.shape(images)[1:])
        if shape != self.image_shape:
            raise ValueError(f"the reference classifier takes images of shape {self.image_shape}, got {shape}")
        if rows:  # rows=True keeps every row in place, so that logits[i] is row i's
            batches = (b[0] for b in images.as_dataset(batch_size, rows=True)) if len(images) else ()
        else:
            batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
        logits, features = [np.zeros((0, self.num_classes), np.float32)], [np.zeros((0, FEATURE_DIM), np.float32)]
        for batch in batches:
            lo, fe = self.network(np.asarray(batch, np.float32), training=False)
            logits.append(np.asarray(lo))
            features.append(np.asarray(fe))
        return np.concatenate(logits), np.concatenate(features)

    def classify(self, images):
        """Class ids [N] of `images` (pixels or an ImageSet, as for `predict`)."""
        return self.predict(images)[0].argmax(-1)
