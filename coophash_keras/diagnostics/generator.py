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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from coophash_keras.diagnostics.reference import FEATURE_DIM, ReferenceClassifier, reference_split
from coophash_keras.preprocessing import normalize_images, to_pixels

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda, Grosse and Salakhutdinov 2016
MAX_FRECHET_SAMPLES = 500


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


def _pixel_spread(images):
    """Mean over pixels of the std over images, in [0, 1] pixel units."""
    return float(np.asarray(images, np.float64).std(axis=0).mean() / 255.0)


def _class_spread_ratios(samples, sample_classes, real, real_labels, num_classes):
    """Per class c: the pixel spread of the samples of c over that of the real images of c."""
    return np.array(
        [
            _pixel_spread(samples[sample_classes == c]) / max(_pixel_spread(real[real_labels == c]), 1e-8)
            for c in range(num_classes)
        ]
    )


def _in_batches(fn, *arrays, batch_size=500):
    outs = [fn(*(a[i : i + batch_size] for a in arrays)) for i in range(0, len(arrays[0]), batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate([np.asarray(o[k]) for o in outs]) for k in range(len(outs[0])))
    return np.concatenate([np.asarray(o) for o in outs])


def latents(model, count, seed=0):
    """The z ~ N(0, I) that `class_samples` draws for `count` samples."""
    return tf.random.stateless_normal([count, model.config.latent_dim], [seed, 17]).numpy()


def class_samples(model, num_classes, per_class, seed=0):
    """(generated, revised or None, class ids): `per_class` samples g(z, c) of every class, with
    z ~ N(0, I) drawn from `seed` (`latents`), as normalised images at the synthesis size; `revised`
    is their Langevin revision for CoopHash (None for a model without one)."""
    classes = np.repeat(np.arange(num_classes), per_class)
    one_hot = tf.one_hot(classes, num_classes)
    z = latents(model, len(classes), seed)
    generated = _in_batches(lambda zz, cc: model.generator(zz, cc), z, one_hot.numpy())
    revised = None
    if hasattr(model, "langevin_revise"):
        revised = _in_batches(
            lambda x, cc, s: model.langevin_revise(x, cc, tf.constant([seed, int(s[0])], tf.int32))[0],
            generated,
            one_hot.numpy(),
            np.arange(len(classes)),
        )
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
    generated, _, classes = class_samples(model, num_classes, per_class, seed)
    generated = _to_pixels_at_image_size(model, generated)
    return _class_spread_ratios(generated, classes, images, np.asarray(labels), num_classes)


def _to_pixels_at_image_size(model, images):
    return np.asarray(to_pixels(model.hash_network.to_image_size(tf.convert_to_tensor(images))))


def _latent_statistics(model, normalized_images, made_by=None):
    """KL per dimension (mean over images) and active units of q(z|x) on the given images; with
    `made_by` (the z that made each image), how much of it E_q[z|x] recovers: the mean over
    dimensions of the squared correlation (R^2 of a linear fit per dimension)."""
    d = model.hash_network
    z_mean, z_log_var = _in_batches(d.infer_latent, normalized_images)
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


def generator_diagnostics(model, data, reference: ReferenceClassifier | None = None, seed=0, verbose=0):
    """Every measurement of the module docstring for `model` (CoopHash or DSH-GAN) on the
    single-label ImageSet it was trained on, as a JSON-ready dict. `reference` defaults to the
    data set's cached reference classifier (trained on first use).

    Example:
        report = generator_diagnostics(model, load_dataset("digits"))
        report["spread_ratio"]["mean"], report["class_consistency"]["revised"]
    """
    if not has_generator(model):
        raise ValueError(f"{type(model).__name__} has no generator to diagnose (CoopHash and DSH-GAN have one)")
    split = reference_split(data)
    reference = reference or ReferenceClassifier.for_data(data, split, verbose=verbose)
    held_images, held_labels = data.pixels(split.held_out), data.labels[split.held_out]
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
        real_a.append(held_images[idx[:n]])
        real_b.append(held_images[idx[n : 2 * n]])
    _, feat_a = reference.predict(np.concatenate(real_a))
    _, feat_b = reference.predict(np.concatenate(real_b))
    frechet = {"real": _per_class_frechet(feat_a, feat_b, C, n)}
    spread, consistency = {}, {}
    for name, images in sets.items():
        logits, features = reference.predict(images)
        consistency[name] = float(np.mean(logits.argmax(-1) == classes))
        frechet[name] = _per_class_frechet(features, feat_b, C, n)
        ratios = _class_spread_ratios(images, classes, held_images, held_labels, C)
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
        normalized_real = np.asarray(normalize_images(held_images))
        report["latent_real"] = _latent_statistics(model, normalized_real)
        report["latent_revised"] = _latent_statistics(model, revised, latents(model, len(classes), seed))
        report["energy"] = _energies(model, normalized_real, held_labels, generated, revised, classes, C)
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


def _energies(model, real, real_labels, generated, revised, classes, num_classes):
    d = model.hash_network
    energy = lambda x, y: d.energy(x, tf.one_hot(y, num_classes))  # noqa: E731
    return {
        "real": float(_in_batches(energy, real, real_labels).mean()),
        "generated": float(_in_batches(energy, generated, classes).mean()),
        "revised": float(_in_batches(energy, revised, classes).mean()),
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
