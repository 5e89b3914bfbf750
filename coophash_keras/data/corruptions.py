"""Image corruptions for out-of-distribution retrieval and corrupted-query experiments.

The shift (ours; the paper's OOD protocol could not be read): the kinds of damage a query photo
picks up and that a class label does not depend on: sensor noise, defocus blur, low contrast, a
tilted camera, an occluding object. Each is applied at one moderate severity chosen so that a
person still recognises a Fashion-MNIST item. All work on raw uint8 pixels [N, H, W, C] and are
deterministic given the seed.
"""

import numpy as np
from scipy import ndimage

CORRUPTIONS = ("noise", "blur", "contrast", "rotation", "occlusion")


def _noise(x, rng):
    return x + rng.normal(0.0, 0.25 * 255, x.shape)


def _blur(x, rng):
    return ndimage.gaussian_filter(x, sigma=(0, 1.2, 1.2, 0))


def _contrast(x, rng):
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return mean + 0.35 * (x - mean)


def _rotation(x, rng):
    out = np.empty_like(x)
    angles = rng.choice([-1, 1], len(x)) * rng.uniform(25, 40, len(x))
    for i, a in enumerate(angles):
        out[i] = ndimage.rotate(x[i], a, axes=(0, 1), reshape=False, order=1, mode="constant", cval=0.0)
    return out


def _occlusion(x, rng):
    out = x.copy()
    n, h, w, _ = x.shape
    size_h, size_w = max(1, int(round(0.4 * h))), max(1, int(round(0.4 * w)))
    tops = rng.integers(h // 6, h - size_h - h // 6 + 1, n)
    lefts = rng.integers(w // 6, w - size_w - w // 6 + 1, n)
    for i in range(n):
        out[i, tops[i] : tops[i] + size_h, lefts[i] : lefts[i] + size_w, :] = 128.0
    return out


_FUNCTIONS = {"noise": _noise, "blur": _blur, "contrast": _contrast, "rotation": _rotation, "occlusion": _occlusion}


def corrupt(images, kind, seed=0):
    """`images` uint8 [N, H, W, C] -> corrupted uint8 copy. kind: one of CORRUPTIONS, or 'mixed'
    (each image gets one kind drawn at random)."""
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {x.shape}")
    rng = np.random.default_rng(seed)
    xf = x.astype(np.float64)
    if kind == "mixed":
        which = rng.integers(0, len(CORRUPTIONS), len(x))
        out = np.empty_like(xf)
        for j, name in enumerate(CORRUPTIONS):
            idx = np.flatnonzero(which == j)
            if idx.size:
                out[idx] = _FUNCTIONS[name](xf[idx], rng)
    elif kind in _FUNCTIONS:
        out = _FUNCTIONS[kind](xf, rng)
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS + ('mixed',)}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
