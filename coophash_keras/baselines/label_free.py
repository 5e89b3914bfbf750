"""Hashing with no labels at all: ITQ and LSH, the label-free references and floors.

    ITQ  Iterative Quantization (Gong & Lazebnik, CVPR 2011; TPAMI 2013): centre the features,
         project them on their top K principal directions (V = (X - mu) W), then learn an
         orthogonal rotation R that minimises the quantisation loss ||B - V R||_F^2 by alternating
         B = sign(V R) and R from the SVD of B^T V = S Omega S_hat^T, R = S_hat S^T (the
         orthogonal Procrustes solution). Each half-step cannot increase the loss; R stays
         orthogonal. R starts as a random orthogonal matrix (seeded by config.seed).
    LSH  Sign of a random projection (Charikar 2002): codes = sign((x - mu) W) with W Gaussian
         [D, K] (seeded by config.seed) and mu the mean of the data it is fitted on (centring, so
         that each bit splits the data near its middle).

Both hash the normalised raw pixels (D = H*W*C) or, with `config.backbone`, a pretrained
backbone's pooled features; the exported SavedModel takes raw pixels either way
(models/networks.py `ProjectionHashNetwork`).

They are *fitted*, not trained by gradient descent: `model.fit(x)` reads the images once, streamed
(up to `config.label_free_max_images`; labels, if any, are ignored): the features' mean and (ITQ)
covariance are accumulated batch by batch (FeatureStatistics), never the feature matrix of every
image, and ITQ learns its rotation on the first ROTATION_IMAGES (10,000) images' features. Then
it sets the weights in closed form and returns a History of one "epoch" (its logs: the final quantisation loss, the bit balance, how
many images were read; `model.itq_losses` keeps the loss after every ITQ iteration). `epochs` and
`steps_per_epoch` only bound how much of an endless dataset is read (at most `steps_per_epoch`
batches); the callbacks get one epoch. `compile()` takes no optimizer. `coophash train --model itq`
(or `train_run`) fits on the labelled training images and the pool (labels ignored), or on every
image of an `images:PATH` data set; a backup holds the fitted weights like any other model's.
"""

import keras
import numpy as np
import tensorflow as tf

from coophash_keras.data.validation import validate_images
from coophash_keras.models.base import HashingModel
from coophash_keras.models.networks import ProjectionHashNetwork, base_network_kwargs
from coophash_keras.preprocessing import normalize_images

MAX_FEATURE_DIM = 8192  # the covariance is D x D float64 (8192: 512 MiB); use a backbone or smaller images


def random_rotation(k, seed):
    """A random orthogonal K x K matrix (QR of a Gaussian matrix, signs fixed so it is uniform)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def binarize(x):
    """+1 where x >= 0, else -1 (the package's code convention: a zero is +1)."""
    return np.where(x >= 0, 1.0, -1.0)


def itq_rotation(v, iterations, r0):
    """ITQ's alternating minimisation of ||B - V R||_F^2 from the rotation `r0`.
    Returns (R [K, K], losses: the loss after each iteration, non-increasing)."""
    r = np.asarray(r0, np.float64)
    losses = []
    for _ in range(iterations):
        b = binarize(v @ r)  # the best codes for this rotation
        u, _, wt = np.linalg.svd(b.T @ v)  # B^T V = U diag(s) Wt
        r = wt.T @ u.T  # the orthogonal R that maximises tr(B^T V R) (orthogonal Procrustes)
        losses.append(float(np.sum((b - v @ r) ** 2)))
    return r, losses


ROTATION_IMAGES = 10_000  # ITQ learns its rotation on this many images' features (the first read)


class FeatureStatistics:
    """What one streamed pass over the features keeps: their count, sum and (when `covariance`)
    sum of outer products, in float64, and the first `keep` features (float32) as a sample; never
    the feature matrix of every image read."""

    def __init__(self, dim, keep, covariance=True):
        self.n, self.keep = 0, keep
        self.total = np.zeros(dim)
        self.outer = np.zeros((dim, dim)) if covariance else None
        self.parts = []

    def add(self, features):
        f = np.asarray(features, np.float64)
        self.n += len(f)
        self.total += f.sum(0)
        if self.outer is not None:
            self.outer += f.T @ f
        have = sum(len(p) for p in self.parts)
        if have < self.keep:
            self.parts.append(np.asarray(features[: self.keep - have], np.float32))

    @property
    def mean(self):
        return self.total / self.n

    @property
    def covariance(self):
        """About the mean, divided by n."""
        return self.outer / self.n - np.outer(self.mean, self.mean)

    @property
    def sample(self):
        return np.concatenate(self.parts)


def top_directions(covariance, k):
    """The top-k eigenvectors [D, k] of a covariance matrix, largest eigenvalue first."""
    values, vectors = np.linalg.eigh(covariance)
    return vectors[:, np.argsort(values)[::-1][:k]]


class LabelFreeHashingModel(HashingModel):
    """What ITQ and LSH share: the projection network, no optimizer, and a `fit` that reads the
    images once and sets the weights (`fit_features` in each subclass)."""

    optimizer_groups: dict = {}
    tracker_names: tuple = ()
    tunable_fields: tuple = ()
    fit_log_names: tuple = ("bit_balance", "fit_images", "feature_dim")  # the one epoch's logs
    needs_labels = False
    fitted_in_closed_form = True

    @staticmethod
    def uses_unlabeled(config):
        return True  # the pool is what it is fitted on (coophash_keras.runs.fitting_dataset)

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        c = self.config
        base = base_network_kwargs(c) if c.backbone != "none" else None
        self.hash_network = ProjectionHashNetwork(c.image_shape, c.num_bits, c.num_classes, base, name="network")
        self.fit_logs = {}

    def optimizer_variables(self, group):
        return []

    needs_covariance = False

    def fit_statistics(self, stats):
        """Set the network's weights from one pass's FeatureStatistics; return the epoch's logs."""
        raise NotImplementedError

    def _image_batches(self, x, batch_size, steps):
        """uint8 image batches of an array or a dataset of images / (images, labels[, pool]) batches."""
        if isinstance(x, tf.data.Dataset):
            for i, element in enumerate(x):
                if steps is not None and i >= steps:
                    return
                if isinstance(element, (tuple, list)):
                    yield from (e for j, e in enumerate(element) if j != 1)  # drop the labels
                else:
                    yield element
            return
        images = validate_images(x, self.config.image_shape)
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]

    def read_statistics(self, x, batch_size=256, steps=None):
        """FeatureStatistics of up to config.label_free_max_images images of `x`, in one streamed
        pass (a batch of features at a time)."""
        d = self.hash_network.feature_dim
        if d > MAX_FEATURE_DIM:
            h, w, c = self.config.image_shape
            raise ValueError(
                f"{type(self).__name__} on raw pixels of {h}x{w}x{c} images has {d} feature dimensions, more "
                f"than {MAX_FEATURE_DIM} (its covariance would not fit in memory): pass a smaller --image-size "
                "or a --backbone"
            )
        limit = self.config.label_free_max_images
        stats = FeatureStatistics(d, ROTATION_IMAGES, covariance=self.needs_covariance)
        features = tf.function(lambda images: self.hash_network.features(normalize_images(images)))
        for batch in self._image_batches(x, batch_size, steps):
            batch = batch[: limit - stats.n]
            if len(batch):
                stats.add(np.asarray(features(tf.convert_to_tensor(batch)), np.float32))
            if stats.n >= limit:
                break
        if not stats.n:
            raise ValueError(f"{type(self).__name__}.fit got no images to fit on")
        return stats

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs):
        """Fit in closed form (module docstring): read the images of `x` (labels `y` ignored), set
        the weights, run the callbacks over one epoch. Returns a keras History."""
        if not self.built:
            self.build()
        cbs = keras.callbacks.CallbackList(
            list(callbacks or []), add_history=True, add_progbar=False, model=self, epochs=1, steps=1, verbose=0
        )
        cbs.on_train_begin()
        cbs.on_epoch_begin(0)
        stats = self.read_statistics(x, batch_size or 256, kwargs.get("steps_per_epoch"))
        if stats.n < 2:
            raise ValueError(f"{type(self).__name__}.fit needs at least 2 images, got {stats.n}")
        d = len(stats.total)
        logs = dict(self.fit_statistics(stats), fit_images=float(stats.n), feature_dim=float(d))
        codes = binarize(self.hash_network.codes_from_features(stats.sample).numpy())
        logs["bit_balance"] = float(1 - np.abs(codes.mean(0)).mean())
        self.fit_logs = logs
        cbs.on_epoch_end(0, logs)
        cbs.on_train_end(logs)
        return self.history

    def set_projection(self, mean, projection):
        self.hash_network.mean.assign(np.asarray(mean, np.float32))
        self.hash_network.projection.assign(np.asarray(projection, np.float32))


@keras.saving.register_keras_serializable(package="coophash")
class ITQ(LabelFreeHashingModel):
    """Config fields used: num_bits (K <= the feature dimensions), itq_iterations, seed (the initial
    rotation), label_free_max_images, backbone / backbone_weights (else raw pixels)."""

    fit_log_names = ("quantization_loss", *LabelFreeHashingModel.fit_log_names)

    needs_covariance = True

    def fit_statistics(self, stats):
        k, d = self.config.num_bits, len(stats.total)
        if k > d:
            raise ValueError(f"ITQ: {k} bits need at least {k} feature dimensions, the features have {d}")
        mean, w = stats.mean, top_directions(stats.covariance, k)
        features = stats.sample  # the rotation is learnt on these (ROTATION_IMAGES), the PCA on all
        v = (features.astype(np.float64) - mean) @ w
        r, losses = itq_rotation(v, self.config.itq_iterations, random_rotation(k, self.config.seed))
        self.itq_losses = losses
        self.rotation = r
        self.set_projection(mean, w @ r)
        quantization = losses[-1] if losses else float(np.sum((binarize(v @ r) - v @ r) ** 2))
        return {"quantization_loss": quantization / len(features)}  # per image


@keras.saving.register_keras_serializable(package="coophash")
class LSH(LabelFreeHashingModel):
    """Config fields used: num_bits, seed (the projection), label_free_max_images, backbone /
    backbone_weights (else raw pixels)."""

    def fit_statistics(self, stats):
        rng = np.random.default_rng(self.config.seed)
        projection = rng.standard_normal((len(stats.total), self.config.num_bits))
        self.set_projection(stats.mean, projection)
        return {}
