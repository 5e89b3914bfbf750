"""ctypes binding of hamming_kernel.c, compiled on first use (gcc -O3 -march=native -fopenmp) into
a per-user cache keyed by the source hash. Without a C compiler, a numpy fallback (np.bitwise_count)
gives the same results, slower."""

import ctypes
import hashlib
import os
import subprocess
import tempfile
import warnings

import numpy as np

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hamming_kernel.c")
_LIB = None
_TRIED = False


def _cache_dir():
    return os.environ.get("COOPHASH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "coophash_keras"))


def build(verbose=False):
    """Compile the kernel if needed; return the library path (raises if the compiler fails)."""
    with open(_SOURCE, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()[:16]
    os.makedirs(_cache_dir(), exist_ok=True)
    path = os.path.join(_cache_dir(), f"hamming_kernel_{digest}.so")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=_cache_dir())
        os.close(fd)
        cmd = [os.environ.get("CC", "gcc"), "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", _SOURCE, "-o", tmp]
        try:
            subprocess.run(cmd, check=True, capture_output=not verbose)
            os.replace(tmp, path)  # atomic: concurrent builders never load half a file
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return path


def load():
    """The compiled library, or None (numpy fallback) if it cannot be built."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    try:
        lib = ctypes.CDLL(build())
    except (OSError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        warnings.warn(f"coophash: C Hamming kernel unavailable ({exc}); using the slower numpy scan", stacklevel=2)
        return None
    P = ctypes.c_void_p
    lib.hamming_topk.argtypes = [
        P,
        P,
        ctypes.c_int64,
        ctypes.c_int,
        P,
        ctypes.c_int64,
        ctypes.c_int,
        P,
        P,
        ctypes.c_int,
    ]
    lib.hamming_topk.restype = None
    lib.hamming_distances.argtypes = [P, ctypes.c_int64, ctypes.c_int, P, ctypes.c_int64, P]
    lib.hamming_distances.restype = None
    lib.popcount_scan.argtypes = [P, ctypes.c_int64, ctypes.c_int, P, ctypes.c_int64]
    lib.popcount_scan.restype = ctypes.c_int64
    _LIB = lib
    return lib


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def topk(db_words, ids, query_words, k, use_c=True, ids_increasing=False):
    """db_words uint64 [n, w], ids int64 [n], query_words uint64 [q, w] -> (ids [q, k], dist [q, k]).
    ids_increasing: the ids grow with the row (enables a stricter, faster filter; must be true)."""
    n, w = db_words.shape
    nq = len(query_words)
    lib = load() if use_c else None
    if lib is not None:
        db = np.ascontiguousarray(db_words)
        qw = np.ascontiguousarray(query_words)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        out_d = np.empty((nq, k), np.int32)
        out_id = np.empty((nq, k), np.int64)
        lib.hamming_topk(_ptr(db), _ptr(ids), n, w, _ptr(qw), nq, k, _ptr(out_d), _ptr(out_id), int(ids_increasing))
        return out_id, out_d
    out_d = np.empty((nq, k), np.int32)
    out_id = np.empty((nq, k), np.int64)
    for i in range(nq):
        d = distances(db_words, query_words[i : i + 1], use_c=False)[0].astype(np.int64)
        order = np.lexsort((ids, d))[:k]
        out_d[i], out_id[i] = d[order], ids[order]
    return out_id, out_d


def distances(db_words, query_words, use_c=True):
    """All Hamming distances, uint16 [q, n]."""
    n, w = db_words.shape
    nq = len(query_words)
    lib = load() if use_c else None
    if lib is not None:
        db = np.ascontiguousarray(db_words)
        qw = np.ascontiguousarray(query_words)
        out = np.empty((nq, n), np.uint16)
        lib.hamming_distances(_ptr(db), n, w, _ptr(qw), nq, _ptr(out))
        return out
    out = np.empty((nq, n), np.uint16)
    for i in range(nq):
        out[i] = np.bitwise_count(db_words ^ query_words[i]).sum(axis=1)
    return out


def popcount_scan(db_words, query_words):
    lib = load()
    if lib is None:
        raise RuntimeError("the C kernel is needed for the scan-limit measurement")
    n, w = db_words.shape
    return lib.popcount_scan(
        _ptr(np.ascontiguousarray(db_words)), n, w, _ptr(np.ascontiguousarray(query_words)), len(query_words)
    )
