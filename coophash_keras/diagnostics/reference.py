"""The reference classifier: a measuring instrument for generated images, never part of a model.

A small CNN trained on a data set's labelled training images. It tells which class a generated
image looks like (class consistency) and gives the feature space of the Fréchet distance. Its own
accuracy on held-out real images is the ceiling that class consistency is compared with.

Which images train it and which are held out (`reference_split`):
  fashion_mnist  the official train file trains it; the official test file is held out;
  other data     a seeded half of every class trains it; the other half is held out.
The trained classifier is cached on disk (`COOPHASH_CACHE`, default ~/.cache/coophash-keras),
keyed by the data's fingerprint, so every diagnosis of one data set uses the same instrument.
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


def _fingerprint(images, labels):
    h = hashlib.sha256()
    h.update(str(images.shape).encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
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
    images in [0, 255] at the data's image shape; `accuracy` is its accuracy on the held-out
    images it was not trained on.

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
    def train(cls, images, labels, num_classes, held_images, held_labels, epochs=None, verbose=0):
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(REFERENCE_SEED)
        net = _build(images.shape[1:], num_classes)
        # Trained on the logits only; the features follow.
        trainer = keras.Model(net.input, net.output[0])
        trainer.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        if epochs is None:  # about 6,000 optimizer steps at batch 64 on a small set, 6 epochs on a large one
            epochs = int(np.clip(6000 * 64 // max(len(images), 1), 6, 60))
        ds = (
            tf.data.Dataset.from_tensor_slices((images.astype(np.float32), labels.astype(np.int64)))
            .shuffle(len(images), seed=REFERENCE_SEED)
            .batch(64)
        )
        trainer.fit(ds, epochs=epochs, verbose=verbose)
        ref = cls(net, 0.0, images.shape[1:], num_classes)
        ref.accuracy = float(np.mean(ref.classify(held_images) == held_labels))
        return ref

    @classmethod
    def for_data(cls, data, split: ReferenceSplit | None = None, cache=True, verbose=0):
        """The reference classifier of an ImageSet, trained once and cached (see the module docstring)."""
        import keras

        split = split or reference_split(data)
        images, labels = data.pixels(split.train), data.labels[split.train]
        held_images, held_labels = data.pixels(split.held_out), data.labels[split.held_out]
        key = f"reference-{data.name.replace(':', '_').replace('/', '_')[-40:]}-{_fingerprint(images, labels)}"
        path = os.path.join(cache_dir(), key + ".keras")
        if cache and os.path.exists(path) and os.path.exists(path + ".json"):
            with open(path + ".json") as fh:
                meta = json.load(fh)
            return cls(
                keras.models.load_model(path, compile=False), meta["accuracy"], data.image_shape, data.num_classes
            )
        if verbose:
            print(
                f"training the reference classifier on {len(images)} {data.name} images (cached in {path})", flush=True
            )
        ref = cls.train(images, labels, data.num_classes, held_images, held_labels)
        if cache:
            from coophash_keras.io import atomic_path, atomic_write_json

            with atomic_path(path, ".keras") as tmp:
                ref.network.save(tmp)
            atomic_write_json(path + ".json", {"accuracy": ref.accuracy, "train_images": int(len(images))})
        return ref

    def predict(self, images, batch_size=512):
        images = np.asarray(images, np.float32)
        if images.shape[1:] != self.image_shape:
            raise ValueError(
                f"the reference classifier takes images of shape {self.image_shape}, got {images.shape[1:]}"
            )
        logits, features = [], []
        for i in range(0, len(images), batch_size):
            lo, fe = self.network(images[i : i + batch_size], training=False)
            logits.append(np.asarray(lo))
            features.append(np.asarray(fe))
        return np.concatenate(logits), np.concatenate(features)

    def classify(self, images):
        return self.predict(images)[0].argmax(-1)
