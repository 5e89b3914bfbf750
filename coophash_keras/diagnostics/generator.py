"""Is a model's generator generating? Measurements of g(z, c) for every model with one (CoopHash,
DSH-GAN), each a number a collapsed generator cannot fake:

  spread ratio        per class, the per-pixel std of g(z, c) over z divided by that of the real
                      images of c (about 0 when g ignores z);
  class consistency   the share of samples the reference classifier (diagnostics/reference.py)
                      labels as the class asked for (about 1/C when g ignores c);
  Fréchet distance    per class, between Gaussians fitted to reference-classifier features of N
                      samples and of N held-out real images, averaged over classes; real against
                      real (two disjoint halves of the held-out images) is the floor;
  posterior collapse  (CoopHash) KL(q(z|x) || N(0, I)) per latent dimension and the active units
                      (Burda et al. 2016: dimensions with Cov_x(E_q[z_d|x]) > 0.01), on held-out
                      real images and on revised samples;
  energies            (CoopHash) mean f_E of real, generated and Langevin-revised images.

CoopHash's samples are measured raw (x^ = g(z, c)) and revised (x~, its Langevin revision).

The real images are read through the data set's pipeline (`ImageSet.as_dataset`), a bounded batch at
a time, so that a file data set of any size is never decoded whole: only the Fréchet distances'
2N real images per class are predicted, and the pixel spread, the posterior and the energies of the
real held-out images are accumulated batch by batch. What is held whole is per row and small
(labels, latent means, energies), or per class (N samples).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from coophash_keras.diagnostics.reference import FEATURE_DIM, ReferenceClassifier, reference_split, warn_once
from coophash_keras.preprocessing import normalize_images, to_pixels

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda, Grosse and Salakhutdinov 2016
MAX_FRECHET_SAMPLES = 500
SPREAD_CHUNK = 2**20  # pixel values per batch of the streamed spread (8 MiB as float64)
LATENT_BATCH = 500  # images per posterior / energy call (the batches of `_in_batches`)


def has_generator(model) -> bool:
    return hasattr(model, "generator") and hasattr(model, "hash_network")


def frechet_distance(features_a, features_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two [N, D] sets."""
    import warnings

    from scipy import linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # a singular product (a collapsed sample set) is expected here
        warnings.simplefilter("ignore")
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        if not np.isfinite(root).all():  # the usual small offset (pytorch-fid)
            offset = np.eye(len(cov_a)) * 1e-6
            root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = root.real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def frechet_samples_per_class(held_out_labels, num_classes):
    """N of the Fréchet distances: half the smallest class's held-out images (two disjoint halves
    make the real-vs-real floor), rounded down to a multiple of 10, at most 500."""
    smallest = min(int(np.sum(held_out_labels == c)) for c in range(num_classes))
    n = min(MAX_FRECHET_SAMPLES, (smallest // 2) // 10 * 10)
    if n < 10:
        raise ValueError(f"too few held-out images per class for the diagnostics ({smallest}; need at least 20)")
    return n


class _Spread:
    """The per-pixel std over images, accumulated batch by batch (Chan et al.'s pairwise update of
    count, mean and M2). One batch gives numpy's `std(axis=0)` bit for bit (the same operations), so
    a class that fits in one batch (every class of digits) keeps the in-memory number exactly."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, images):
        x = np.asarray(images, np.float64)
        n = len(x)
        if n == 0:
            return self
        mean = x.mean(axis=0)
        m2 = np.square(x - mean).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
        else:
            total = self.count + n
            delta = mean - self.mean
            self.mean = self.mean + delta * (n / total)
            self.m2 = self.m2 + m2 + np.square(delta) * (self.count * n / total)
            self.count = total
        return self

    def value(self):
        """Mean over pixels of the std over images, in [0, 1] pixel units (nan without images)."""
        if self.count == 0:
            return float("nan")
        return float(np.sqrt(self.m2 / self.count).mean() / 255.0)


def _pixel_spread(images):
    """Mean over pixels of the std over images, in [0, 1] pixel units."""
    return _Spread().add(images).value()


def _real_spreads(data, num_classes):
    """Per class c: the pixel spread of the ImageSet `data`'s images of class c, one class at a time
    through its pipeline in batches of SPREAD_CHUNK pixel values, so that memory does not grow with
    the set (nor with the number of classes). Undecodable files are left out."""
    batch = max(1, SPREAD_CHUNK // int(np.prod(data.image_shape)))
    spreads = []
    for c in range(num_classes):
        acc, rows = _Spread(), np.flatnonzero(data.labels == c)
        if len(rows):
            for images, _ in data.subset(rows).as_dataset(batch):
                acc.add(images)
        spreads.append(acc.value())
    return np.array(spreads)


def _class_spread_ratios(samples, sample_classes, real_spreads, num_classes):
    """Per class c: the pixel spread of the samples of c over that of the real images of c."""
    return np.array(
        [_pixel_spread(samples[sample_classes == c]) / max(real_spreads[c], 1e-8) for c in range(num_classes)]
    )


def _in_batches(fn, *arrays, batch_size=500):
    outs = [fn(*(a[i : i + batch_size] for a in arrays)) for i in range(0, len(arrays[0]), batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(len(outs[0])))
    return np.concatenate([np.asarray(o) for o in outs])


def latents(model, count, seed=0):
    """The z ~ N(0, I) that `class_samples` draws for `count` samples."""
    return tf.random.stateless_normal([count, model.config.latent_dim], [seed, 17]).numpy()


def label_samples(model, labels, seed=0):
    """(generated, revised or None): a sample g(z, c) per row of `labels` (multi-hot [N, C], one-hot
    for a class), with z ~ N(0, I) drawn from `seed` (`latents`), as normalised images at the
    synthesis size; `revised` is their Langevin revision for CoopHash (None for a model without one)."""
    labels = np.asarray(labels, np.float32)
    z = latents(model, len(labels), seed)
    generated = _in_batches(lambda zz, cc: model.generator(zz, cc), z, labels)
    revised = None
    if hasattr(model, "langevin_revise"):
        revised = _in_batches(
            lambda x, cc, s: model.langevin_revise(x, cc, tf.constant([seed, int(s[0])], tf.int32))[0],
            generated,
            labels,
            np.arange(len(labels)),
        )
    return generated, revised


def class_samples(model, num_classes, per_class, seed=0):
    """(generated, revised or None, class ids): `per_class` samples of every class (`label_samples`)."""
    classes = np.repeat(np.arange(num_classes), per_class)
    generated, revised = label_samples(model, tf.one_hot(classes, num_classes).numpy(), seed)
    return generated, revised, classes


def spread_ratios(model, images, labels, num_classes, per_class=64, seed=0):
    """Per class: the pixel spread (std over images, averaged over pixels) of `per_class` samples
    g(z, c) over z ~ N(0, I), divided by that of the real `images` of class c (raw pixels, [N, H,
    W, C]). Near 0 means the generator makes one image per class (collapse); near 1, as varied as
    the data. No reference classifier needed: the cheap check, e.g. for a test.

    Example:
        ratios = spread_ratios(model, data.images, data.labels, data.num_classes)
        assert ratios.mean() >= 0.7 and ratios.min() >= 0.5
    """
    from coophash_keras.data import ImageSet

    generated, _, classes = class_samples(model, num_classes, per_class, seed)
    generated = _to_pixels_at_image_size(model, generated)
    real = _real_spreads(ImageSet(np.asarray(images), np.asarray(labels), num_classes), num_classes)
    return _class_spread_ratios(generated, classes, real, num_classes)


def _to_pixels_at_image_size(model, images):
    return np.asarray(to_pixels(model.hash_network.to_image_size(tf.convert_to_tensor(images))))


def _latent_statistics(z_mean, z_log_var, made_by=None):
    """KL per dimension (mean over images) and active units of q(z|x), from its mean and log
    variance [N, latent_dim] on the images; with `made_by` (the z that made each image), how much of
    it E_q[z|x] recovers: the mean over dimensions of the squared correlation (R^2 of a linear fit
    per dimension)."""
    recovery = {}
    if made_by is not None:
        r = [
            np.corrcoef(made_by[:, k], z_mean[:, k])[0, 1] if z_mean[:, k].std() > 0 else 0.0
            for k in range(z_mean.shape[1])
        ]
        recovery = {"z_recovery_r2": float(np.mean(np.square(np.nan_to_num(r))))}
    kl = 0.5 * (np.square(z_mean) + np.exp(z_log_var) - 1.0 - z_log_var)
    activity = z_mean.var(axis=0)
    return {
        "kl_per_dim": [round(float(v), 5) for v in kl.mean(0)],
        "kl_total": float(kl.sum(1).mean()),
        "activity_per_dim": [round(float(v), 5) for v in activity],
        "active_units": int(np.sum(activity > ACTIVE_UNIT_THRESHOLD)),
        "latent_dim": int(z_mean.shape[1]),
        **recovery,
    }


def _real_posterior_and_energies(model, data, num_classes):
    """(z_mean, z_log_var, energies) of q(z|x) and f_E(x, y) on the ImageSet `data`'s images, read
    through its pipeline in order, LATENT_BATCH at a time (the batches of `_in_batches`, so the
    same numbers as on the array); per row only latent_dim + 1 numbers are kept."""
    d = model.hash_network
    z_mean, z_log_var, energies = [], [], []
    for images, labels in data.as_dataset(LATENT_BATCH):
        x = normalize_images(images)
        mean, log_var = d.infer_latent(x)
        z_mean.append(np.asarray(mean))
        z_log_var.append(np.asarray(log_var))
        energies.append(np.asarray(d.energy(x, tf.one_hot(labels, num_classes))))
    return np.concatenate(z_mean), np.concatenate(z_log_var), np.concatenate(energies)


def generator_diagnostics(model, data, reference: ReferenceClassifier | None = None, seed=0, verbose=0):
    """Every measurement of the module docstring for `model` (CoopHash or DSH-GAN), as a JSON-ready dict.

    Args:
        model: a CoopHash or DSH-GAN model.
        data: the single-label ImageSet it was trained on; file rows are read through the pipeline
            a batch at a time (memory does not grow with the set), giving the in-memory numbers.
        reference: default the data set's cached reference classifier (trained on first use).
        seed: seed of the latents z of the samples and of the choice of real images.
        verbose: 1 says when the reference classifier is trained.

    Example:
        report = generator_diagnostics(model, load_dataset("digits"))
        report["spread_ratio"]["mean"], report["class_consistency"]["revised"]
    """
    if not has_generator(model):
        raise ValueError(f"{type(model).__name__} has no generator to diagnose (CoopHash and DSH-GAN have one)")
    split = reference_split(data)
    data = warn_once(data)
    reference = reference or ReferenceClassifier.for_data(data, split, verbose=verbose)
    held = data.subset(split.held_out)  # rows only: a file set decodes nothing here
    held_labels = held.labels
    C = data.num_classes
    n = frechet_samples_per_class(held_labels, C)
    generated, revised, classes = class_samples(model, C, n, seed)
    sets = {"generated": _to_pixels_at_image_size(model, generated)}
    if revised is not None:
        sets["revised"] = _to_pixels_at_image_size(model, revised)

    rng = np.random.default_rng(seed)
    real_a, real_b = [], []  # per class: two disjoint halves of n held-out images each
    for c in range(C):
        idx = rng.permutation(np.flatnonzero(held_labels == c))
        real_a.append(idx[:n])
        real_b.append(idx[n : 2 * n])
    # Streamed in the same batches as the array was: the same features bit for bit.
    _, feat_a = reference.predict(held.subset(np.concatenate(real_a)))
    _, feat_b = reference.predict(held.subset(np.concatenate(real_b)))
    frechet = {"real": _per_class_frechet(feat_a, feat_b, C, n)}
    real_spreads = _real_spreads(held, C)
    spread, consistency = {}, {}
    for name, images in sets.items():
        logits, features = reference.predict(images)
        consistency[name] = float(np.mean(logits.argmax(-1) == classes))
        frechet[name] = _per_class_frechet(features, feat_b, C, n)
        ratios = _class_spread_ratios(images, classes, real_spreads, C)
        spread[name] = {
            "per_class": [round(float(r), 4) for r in ratios],
            "mean": float(ratios.mean()),
            "min": float(ratios.min()),
        }
    report = {
        "model": type(model).__name__,
        "data": data.name,
        "samples_per_class": n,
        "seed": seed,
        "spread_ratio": spread["generated"],
        "spread_ratio_revised": spread.get("revised"),
        "class_consistency": dict(consistency, reference_accuracy=reference.accuracy),
        "frechet": dict(frechet, feature_dim=FEATURE_DIM, samples_per_class=n),
    }
    if hasattr(model, "langevin_revise"):
        z_mean, z_log_var, real_energies = _real_posterior_and_energies(model, held, C)
        report["latent_real"] = _latent_statistics(z_mean, z_log_var)
        z_mean, z_log_var = _in_batches(model.hash_network.infer_latent, revised, batch_size=LATENT_BATCH)
        report["latent_revised"] = _latent_statistics(z_mean, z_log_var, latents(model, len(classes), seed))
        report["energy"] = dict(real=float(real_energies.mean()), **_energies(model, generated, revised, classes, C))
    return report


def _per_class_frechet(features, reference_features, num_classes, n):
    """Mean over classes of the distance between the features of class c's n items in each set
    (both sets ordered class by class, n per class)."""
    return float(
        np.mean(
            [
                frechet_distance(features[c * n : (c + 1) * n], reference_features[c * n : (c + 1) * n])
                for c in range(num_classes)
            ]
        )
    )


def _energies(model, generated, revised, classes, num_classes):
    d = model.hash_network
    energy = lambda x, y: d.energy(x, tf.one_hot(y, num_classes))  # noqa: E731
    return {
        "generated": float(_in_batches(energy, generated, classes, batch_size=LATENT_BATCH).mean()),
        "revised": float(_in_batches(energy, revised, classes, batch_size=LATENT_BATCH).mean()),
    }


def summary_line(report) -> str:
    """One line of the headline numbers of a `generator_diagnostics` report."""
    s, k, f = report["spread_ratio"], report["class_consistency"], report["frechet"]
    parts = [
        f"spread {s['mean']:.2f}x (min {s['min']:.2f})",
        f"consistency {k['generated']:.2f}" + (f"/{k['revised']:.2f} revised" if "revised" in k else ""),
        f"(reference {k['reference_accuracy']:.3f})",
        f"Frechet {f['generated']:.2f}"
        + (f"/{f['revised']:.2f} revised" if "revised" in f else "")
        + f" (floor {f['real']:.2f}, d={f['feature_dim']}, N={f['samples_per_class']}/class)",
    ]
    if "latent_real" in report:
        lat = report["latent_real"]
        parts.append(f"active units {lat['active_units']}/{lat['latent_dim']} (KL {lat['kl_total']:.2f})")
        parts.append(f"z recovered from revised R2 {report['latent_revised'].get('z_recovery_r2', 0):.2f}")
    return ", ".join(parts)
