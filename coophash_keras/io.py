"""Saving and loading models so that a non-finite or half-written model file never replaces a good one."""

import hashlib
import os
import tempfile
import zipfile

import keras
import numpy as np


def all_weights_finite(model):
    return all(
        np.all(np.isfinite(np.asarray(v))) for v in model.weights if np.issubdtype(np.asarray(v).dtype, np.floating)
    )


def save_model(model, path):
    """`model.save(path)` via a temporary file in the same directory and an atomic rename; refuses
    to write a model holding NaN/inf weights."""
    if not all_weights_finite(model):
        raise ValueError(f"refusing to save {path}: the model holds non-finite (NaN/inf) weights")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_model(path):
    """Load a saved CoopHash (or baseline) `.keras` file, with a clear error if it is missing."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    import coophash_keras.baselines  # noqa: F401  (registers the serializable classes)
    import coophash_keras.models.coophash  # noqa: F401

    try:
        return keras.models.load_model(path)
    except Exception as exc:
        raise ValueError(f"{path} is not a loadable CoopHash model file: {exc}") from None


def model_fingerprint(path):
    """A short id of the hash function in a CoopHash `.keras` file: sha256 over the descriptor's
    weight arrays (names and bytes, in sorted order). The same weights give the same id whatever
    the optimizer state or save time; codes from models with different ids are not comparable."""
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(path) as zf, zf.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
            names = []
            h5["descriptor"].visit(lambda n: names.append(n) if isinstance(h5["descriptor"][n], h5py.Dataset) else None)
            for name in sorted(names):
                digest.update(name.encode())
                digest.update(h5["descriptor"][name][()].tobytes())
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not a CoopHash .keras file: {exc}") from None
    return digest.hexdigest()[:16]
