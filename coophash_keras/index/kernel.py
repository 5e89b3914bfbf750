"""ctypes binding of hamming_kernel.c, compiled on first use (gcc -O3 -march=native -fopenmp) into
a per-user cache keyed by the source and the CPU's feature flags (a cache shared by different
machines never hands one a library built for another). Without a C compiler, a numpy fallback
(np.bitwise_count) gives the same results, slower.

Codes are compact: uint8 [n, B] with B = K/8 bytes per code, no padding.

Kernel paths (which SIMD code finds the chunks worth a closer look; all give identical results):
"generic" (plain C), "avx2" (nibble-lookup popcount), "avx512" (VPOPCNTDQ). The default, "auto",
is the best the CPU has; COOPHASH_KERNEL=generic|avx2|avx512|auto, or the `path` argument, forces
one (tests use it to check that every path agrees)."""

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings

import numpy as np

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hamming_kernel.c")
PATHS = {"auto": 0, "generic": 1, "avx2": 2, "avx512": 3}
_NAMES = {v: k for k, v in PATHS.items()}
_LIB = None
_TRIED = False


def _cache_dir():
    return os.environ.get("COOPHASH_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "coophash_keras"))


def _cpu_key():
    """The CPU's feature flags: -march=native code must not run on a CPU that lacks them."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def build(verbose=False):
    """Compile the kernel if needed; return the library path (raises if the compiler fails)."""
    with open(_SOURCE, "rb") as fh:
        digest = hashlib.sha256(fh.read() + _cpu_key().encode()).hexdigest()[:16]
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
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.hamming_topk.argtypes = [P, I64, INT, P, INT, I64, INT, P, I64, INT, P, P, INT]
    lib.hamming_topk.restype = INT
    lib.hamming_distances.argtypes = [P, I64, INT, P, I64, P]
    lib.hamming_distances.restype = None
    lib.popcount_scan.argtypes = [P, I64, INT, P, I64, INT]
    lib.popcount_scan.restype = I64
    lib.kernel_paths.restype = INT
    lib.kernel_resolve.argtypes = [INT, INT]
    lib.kernel_resolve.restype = INT
    _LIB = lib
    return lib


def available_paths():
    """Kernel paths this CPU can run, e.g. ["generic", "avx2"]; [] without the C kernel."""
    lib = load()
    if lib is None:
        return []
    mask = lib.kernel_paths()
    return [name for name, bit in PATHS.items() if bit and mask & (1 << bit)]


def _path_code(path):
    name = path if path is not None else os.environ.get("COOPHASH_KERNEL", "auto")
    if name not in PATHS:
        raise ValueError(f"kernel path must be one of {sorted(PATHS)}, got {name!r} (COOPHASH_KERNEL or path=)")
    if name != "auto" and name not in available_paths():
        raise ValueError(f"kernel path {name!r} is not supported by this CPU (it has {available_paths()})")
    return PATHS[name]


def resolve(path, nbytes):
    """The path that runs for codes of `nbytes` bytes (the SIMD paths cover 4, 8 and 16 bytes)."""
    lib = load()
    if lib is None:
        return "numpy"
    return _NAMES[lib.kernel_resolve(_path_code(path), int(nbytes))]


def _ptr(a):
    return a.ctypes.data_as(ctypes.c_void_p)


def _id_args(ids, id_start, n):
    """(pointer, width) for int32/int64 ids, or (None, 0) for consecutive ids from id_start."""
    if ids is None:
        return None, 0, None
    ids = np.ascontiguousarray(ids)
    if ids.dtype not in (np.int32, np.int64) or ids.shape != (n,):
        raise ValueError(f"ids must be int32 or int64 [{n}], got {ids.dtype} {ids.shape}")
    return _ptr(ids), ids.dtype.itemsize, ids


def topk(db, ids, queries, k, id_start=0, ids_increasing=False, path=None, use_c=True):
    """db uint8 [n, B]; ids int32/int64 [n] or None (then id = id_start + row); queries uint8 [q, B]
    -> (ids int64 [q, k], distances int32 [q, k]) ordered by (distance, id). Requires 1 <= k <= n.
    ids_increasing: the ids grow with the row (a stricter filter; must be true if passed)."""
    n, nbytes = db.shape
    nq = len(queries)
    lib = load() if use_c else None
    if lib is not None:
        db = np.ascontiguousarray(db, np.uint8)
        qb = np.ascontiguousarray(queries, np.uint8)
        id_ptr, width, keep = _id_args(ids, id_start, n)
        out_d = np.empty((nq, k), np.int32)
        out_id = np.empty((nq, k), np.int64)
        ran = lib.hamming_topk(
            _ptr(db), n, nbytes, id_ptr, width, int(id_start), int(ids_increasing), _ptr(qb), nq, int(k),
            _ptr(out_d), _ptr(out_id), _path_code(path),
        )  # fmt: skip
        if ran < 0:  # _path_code checked the CPU already: only a kernel/binding mismatch gets here
            raise RuntimeError(f"the Hamming kernel refused path {path!r} for {nbytes}-byte codes")
        del keep  # the ids array stayed alive during the call
        return out_id, out_d
    all_ids = np.arange(id_start, id_start + n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    out_d = np.empty((nq, k), np.int32)
    out_id = np.empty((nq, k), np.int64)
    for i in range(nq):
        d = distances(db, queries[i : i + 1], use_c=False)[0].astype(np.int64)
        order = np.lexsort((all_ids, d))[:k]
        out_d[i], out_id[i] = d[order], all_ids[order]
    return out_id, out_d


def _words(codes):
    """uint8 [n, B] -> the widest unsigned view whose popcounts sum to the same distances."""
    for dtype in (np.uint64, np.uint32, np.uint16):
        if codes.shape[1] % np.dtype(dtype).itemsize == 0:
            return np.ascontiguousarray(codes).view(dtype)
    return codes


def distances(db, queries, use_c=True):
    """All Hamming distances, uint16 [q, n]."""
    n, nbytes = db.shape
    nq = len(queries)
    lib = load() if use_c else None
    out = np.empty((nq, n), np.uint16)
    if lib is not None:
        db = np.ascontiguousarray(db, np.uint8)
        qb = np.ascontiguousarray(queries, np.uint8)
        lib.hamming_distances(_ptr(db), n, nbytes, _ptr(qb), nq, _ptr(out))
        return out
    dw, qw = _words(db), _words(queries)
    for i in range(nq):
        out[i] = np.bitwise_count(dw ^ qw[i]).sum(axis=1, dtype=np.uint16)
    return out


def popcount_scan(db, queries, path=None):
    """xor + popcount of every (query, code) pair with no top-k work, through the same path,
    blocking and tiling as topk: the scan rate this machine allows (the benchmark's limit)."""
    lib = load()
    if lib is None:
        raise RuntimeError("the C kernel is needed for the scan-limit measurement")
    n, nbytes = db.shape
    db = np.ascontiguousarray(db, np.uint8)
    qb = np.ascontiguousarray(queries, np.uint8)
    return lib.popcount_scan(_ptr(db), n, nbytes, _ptr(qb), len(qb), _path_code(path))
