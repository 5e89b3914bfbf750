"""Saving and loading models so that a non-finite or half-written model file never replaces a good one."""

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from coophash_keras.faults import pause_point

TEMP_MARK = ".tmp-"  # in every temporary's name: `.<name>.tmp-XXXX<suffix>`, so leftovers are recognisable


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path next to `path`; on success it is fsync'ed and renamed over `path`
    (atomic on POSIX), on error removed. Readers see the old file or the new one, never half.
    A process killed in between leaves the temporary behind: `remove_temporaries` clears it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}{TEMP_MARK}", suffix=suffix or ".tmp", dir=directory)
    os.close(fd)
    try:
        pause_point(name, "begin")
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        pause_point(name, "commit")
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def remove_temporaries(directory):
    """Delete the temporaries that processes killed inside `atomic_path` left in `directory`."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(".") and TEMP_MARK in name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))


def atomic_write_json(path, obj):
    with atomic_path(path, ".json") as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2)


def all_weights_finite(model):
    return all(
        np.all(np.isfinite(np.asarray(v))) for v in model.weights if np.issubdtype(np.asarray(v).dtype, np.floating)
    )


def save_model(model, path):
    """Save a model to a `.keras` file through a temporary file and an atomic rename; refuses to
    write a model holding NaN/inf weights (the old file, if any, stays as it was)."""
    if not all_weights_finite(model):
        raise ValueError(f"refusing to save {path}: the model holds non-finite (NaN/inf) weights")
    if getattr(model, "saves_atomically", False):  # HashingModel.save does the same itself
        model.save(path)
        return
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)


def load_model(path):
    """Load a saved CoopHash (or baseline) `.keras` file, with a clear error if it is missing."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path}")

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
            h5["hash_network"].visit(
                lambda n: names.append(n) if isinstance(h5["hash_network"][n], h5py.Dataset) else None
            )
            for name in sorted(names):
                digest.update(name.encode())
                digest.update(h5["hash_network"][name][()].tobytes())
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not a CoopHash .keras file: {exc}") from None
    return digest.hexdigest()[:16]
