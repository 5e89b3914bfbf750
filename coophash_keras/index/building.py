"""Encoding many files into an index, in chunks that survive a kill.

`encode_in_chunks` encodes the rows of an ImageSet chunk by chunk (CHUNK_ROWS rows, a multiple of
the encoding batch, so a chunk's batches are the same whether the pass ran through or was resumed)
and keeps each finished chunk in a work folder next to the target (`TARGET.partial/`): one .npy of
the kept rows and one of their packed codes per chunk, each written to a temporary name, fsync'ed
and renamed, so a chunk file is either whole or absent. A manifest names what is being encoded (the
model version, the rows' fingerprint, the chunk and batch sizes); a rerun of the same command finds
it and encodes only the missing chunks, and a work folder of another build is started afresh. The
caller writes the index atomically (storage.save: temporary file + rename) and only then removes the
work folder, so at every point either the old index (or none) or the complete new one is on disk,
and a build killed anywhere and rerun gives the same index as one that was never interrupted."""

import hashlib
import json
import os
import shutil

import numpy as np

from coophash_keras.encoding import ENCODE_BATCH, Progress, encode_rows
from coophash_keras.io import atomic_path, atomic_write_json

CHUNK_ROWS = 64 * ENCODE_BATCH  # 16,384 rows: a kill loses at most this much work
MANIFEST = "manifest.json"


def _save_array(path, array):
    with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def rows_fingerprint(data):
    """The encoded rows' identity: their file paths (or pixels) and count."""
    digest = hashlib.sha256(str(len(data)).encode())
    if data.streamed:
        for path in data.extras["paths"]:
            digest.update(str(path).encode("utf-8", "surrogateescape") + b"\0")
    else:
        digest.update(np.ascontiguousarray(data.images).tobytes())
    return digest.hexdigest()[:16]


def _open_work(work, identity, warn):
    """The work folder for `identity`: resumed if it is this build's, else started afresh."""
    manifest = os.path.join(work, MANIFEST)
    if os.path.isdir(work):
        try:
            with open(manifest) as fh:
                if json.load(fh) == identity:
                    return
        except (OSError, ValueError):
            pass
        warn(f"{work} holds another build's (or a damaged) partial work: starting afresh")
        shutil.rmtree(work)
    atomic_write_json(manifest, identity)


def encode_in_chunks(model, model_version, data, work, verbose=0, chunk_rows=CHUNK_ROWS, after_chunk=None):
    """(packed codes uint8 [n, K/8], kept row indices int64 [n]) of every row of `data` that decodes,
    in row order, resuming the chunks found in `work` (module docstring). `after_chunk(k)` is called
    after chunk k is on disk (tests, fault injection). Prints nothing but the pipeline's warnings and
    the progress bar (`verbose`: Keras verbosity); the caller reports the skipped count."""
    if chunk_rows % ENCODE_BATCH:
        raise ValueError(f"chunk_rows must be a multiple of the encoding batch {ENCODE_BATCH}, got {chunk_rows}")
    identity = {
        "model_version": model_version,
        "rows": len(data),
        "rows_fingerprint": rows_fingerprint(data),
        "chunk_rows": chunk_rows,
        "batch": ENCODE_BATCH,
        "num_bits": int(model.config.num_bits),
    }
    _open_work(work, identity, data.warn)
    chunks = range(-(-len(data) // chunk_rows))
    done = [k for k in chunks if os.path.exists(os.path.join(work, f"codes-{k:08d}.npy"))]
    progress = Progress(len(data), verbose, done=min(len(done) * chunk_rows, len(data))) if verbose else None
    for k in chunks:
        codes_file = os.path.join(work, f"codes-{k:08d}.npy")
        if os.path.exists(codes_file):
            continue
        start, stop = k * chunk_rows, min((k + 1) * chunk_rows, len(data))
        parts = list(encode_rows(model, data, True, start=start, stop=stop, progress=progress, report=False))
        rows = np.concatenate([r for r, _ in parts]) if parts else np.zeros(0, np.int64)
        codes = np.concatenate([c for _, c in parts]) if parts else np.zeros((0, model.config.num_bits // 8), np.uint8)
        _save_array(os.path.join(work, f"rows-{k:08d}.npy"), rows)
        _save_array(codes_file, codes)  # last: its presence marks the chunk done
        if after_chunk is not None:
            after_chunk(k)
    rows = [np.load(os.path.join(work, f"rows-{k:08d}.npy")) for k in chunks]
    codes = [np.load(os.path.join(work, f"codes-{k:08d}.npy")) for k in chunks]
    return np.concatenate(codes), np.concatenate(rows)


def finish(work):
    """Remove the work folder once the index it built is saved."""
    shutil.rmtree(work, ignore_errors=True)
