"""HammingIndex: packed binary codes with int64 ids; exact top-k and radius search; FAISS backends;
a single-file on-disk format that is memory-mapped on load.

File format (little endian), written to a temporary file and renamed (an existing index is never
half-overwritten):
    0   8  magic b"CHIDX001"
    8   4  num_bits (uint32)      12  4  words per code w = ceil(num_bits / 64) (uint32)
    16  8  n (uint64)             24  4  length L of the model-version string (uint32)
    28 36  zero padding           64  L  model version (utf-8), zero-padded to a multiple of 64
    then n * w * 8 bytes: codes as uint64 words (bits beyond num_bits are 0), then n * 8 bytes: ids
"""

import os
import struct
import tempfile

import numpy as np

from coophash_keras.index import kernel

MAGIC = b"CHIDX001"
_HEADER = struct.Struct("<8sIIQI36x")
BACKENDS = ("exact", "faiss-flat", "faiss-ivf", "faiss-hash")


def _round64(x):
    return (x + 63) // 64 * 64


class HammingIndex:
    """Exact (C scan, all cores) or FAISS-backed search over K-bit codes, K a multiple of 8."""

    def __init__(self, num_bits, model_version="", backend="exact", faiss_params=None):
        if not isinstance(num_bits, (int, np.integer)) or num_bits <= 0 or num_bits % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.num_bits = int(num_bits)
        self.words = (self.num_bits + 63) // 64
        self.model_version = str(model_version)
        self.backend = backend
        self.faiss_params = dict(faiss_params or {})
        self._codes = np.zeros((0, self.words), np.uint64)
        self._ids = np.zeros(0, np.int64)
        self._id_set = None
        self._faiss = None
        self._ids_increasing = None

    # ------------------------------------------------------------------ codes in, codes out
    def _to_words(self, codes, what="codes"):
        """int8 {-1,+1} [N, K] or packed uint8 [N, K/8] -> uint64 words [N, w] (zero-padded)."""
        arr = np.asarray(codes)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise ValueError(
                f"{what} must be [N, {self.num_bits}] ±1 codes or [N, {self.num_bits // 8}] packed "
                f"uint8, got shape {arr.shape}"
            )
        if arr.dtype == np.uint8 and arr.shape[1] == self.num_bits // 8:
            packed = arr
        elif arr.shape[1] == self.num_bits and arr.dtype.kind in "iuf":
            if not np.all((arr == 1) | (arr == -1) | (arr == 0)):
                raise ValueError(f"{what} with {self.num_bits} columns must hold ±1 (or 0/1) values")
            packed = np.packbits(arr > 0, axis=1)
        elif arr.dtype == np.uint8:
            raise ValueError(
                f"packed {what} must have {self.num_bits // 8} bytes per code for {self.num_bits} bits, "
                f"got {arr.shape[1]}"
            )
        else:
            raise ValueError(
                f"{what} must have {self.num_bits} bits: ±1 codes [N, {self.num_bits}] or packed uint8 "
                f"[N, {self.num_bits // 8}], got {arr.dtype} {arr.shape}"
            )
        padded = np.zeros((len(packed), self.words * 8), np.uint8)
        padded[:, : packed.shape[1]] = packed
        return padded.view(np.uint64)

    def packed_codes(self):
        return self._codes.view(np.uint8)[:, : self.num_bits // 8]

    @property
    def ids(self):
        return self._ids

    def __len__(self):
        return len(self._ids)

    def __contains__(self, item):
        return int(item) in self._ids_lookup()

    def _ids_lookup(self):
        if self._id_set is None:
            self._id_set = set(self._ids.tolist())
        return self._id_set

    # ------------------------------------------------------------------ mutation
    def add(self, codes, ids=None):
        """Append codes with int64 ids (default: continuing integers). Duplicate ids, within the
        call or against the index, are rejected and nothing is added."""
        words = self._to_words(codes)
        if ids is None:  # continuing integers: unique by construction, no checks needed
            start = int(self._ids.max()) + 1 if len(self._ids) else 0
            return self._append(words, np.arange(start, start + len(words), dtype=np.int64))
        ids = np.asarray(ids)
        if ids.ndim != 1 or len(ids) != len(words):
            raise ValueError(f"{len(words)} codes need {len(words)} ids, got shape {ids.shape}")
        if ids.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"duplicate ids in this batch: {uniq[counts > 1][:10].tolist()}")
        clash = np.intersect1d(ids, self._ids)
        if clash.size:
            raise ValueError(f"ids already in the index: {clash[:10].tolist()}")
        return self._append(words, ids)

    def _append(self, words, ids):
        self._codes = np.concatenate([np.asarray(self._codes), words])
        self._ids = np.concatenate([np.asarray(self._ids), ids])
        self._changed()
        return self

    def remove(self, ids):
        """Remove these ids (all must be present; otherwise nothing is removed). Returns the count."""
        ids = np.unique(np.asarray(ids, np.int64))
        missing = np.setdiff1d(ids, self._ids)
        if missing.size:
            raise KeyError(f"ids not in the index: {missing[:10].tolist()}")
        keep = ~np.isin(self._ids, ids)
        self._codes = np.asarray(self._codes)[keep]
        self._ids = np.asarray(self._ids)[keep]
        self._changed()
        return int(len(ids))

    def _changed(self):
        self._id_set = None
        self._faiss = None
        self._ids_increasing = None

    def _increasing(self):
        if self._ids_increasing is None:
            self._ids_increasing = bool(len(self._ids) < 2 or np.all(np.diff(self._ids) > 0))
        return self._ids_increasing

    # ------------------------------------------------------------------ search
    def _check_k(self, k):
        if not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the index ({len(self)} codes)")

    def search(self, queries, k):
        """Top-k ids and Hamming distances per query, ordered by (distance, id): int64 / int32 [Q, k].
        FAISS approximate backends may miss true neighbours; all backends break ties by id."""
        self._check_k(k)
        q = self._to_words(queries, "queries")
        if self.backend == "exact":
            return kernel.topk(self._codes, self._ids, q, int(k), ids_increasing=self._increasing())
        return self._faiss_search(q, int(k))

    def radius_search(self, queries, radius):
        """Per query, (ids, distances) of every code within `radius`, ordered by (distance, id)."""
        if not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if len(self) == 0:
            raise ValueError("the index is empty")
        q = self._to_words(queries, "queries")
        out = []
        chunk = max(1, int(2**27 // max(len(self), 1)))  # about 256 MB of uint16 distances at a time
        for start in range(0, len(q), chunk):
            dist = kernel.distances(self._codes, q[start : start + chunk])
            for row in dist:
                hit = np.flatnonzero(row <= radius)
                order = np.lexsort((self._ids[hit], row[hit]))
                out.append((self._ids[hit][order], row[hit][order].astype(np.int32)))
        return out

    # ------------------------------------------------------------------ FAISS
    def _build_faiss(self):
        import faiss

        packed = np.ascontiguousarray(self.packed_codes())
        p = self.faiss_params
        if self.backend == "faiss-flat":
            index = faiss.IndexBinaryFlat(self.num_bits)
        elif self.backend == "faiss-ivf":
            nlist = int(p.get("nlist", max(1, min(4096, int(np.sqrt(len(self)))))))
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.num_bits), self.num_bits, nlist)
            index.train(packed)
            index.nprobe = int(p.get("nprobe", max(1, nlist // 16)))
        else:
            index = faiss.IndexBinaryHash(self.num_bits, int(p.get("hash_bits", min(self.num_bits, 24))))
            index.nflip = int(p.get("nflip", 2))
        index.add(packed)
        self._faiss = index

    def _faiss_search(self, q_words, k):
        if self._faiss is None:
            self._build_faiss()
        q = np.ascontiguousarray(q_words.view(np.uint8)[:, : self.num_bits // 8])
        # Over-fetch so ties at the k-th distance can be re-ordered by id as in the exact backend.
        fetch = min(len(self), k + 64)
        d, rows = self._faiss.search(q, fetch)
        ids = np.where(rows >= 0, self._ids[np.maximum(rows, 0)], np.iinfo(np.int64).max)
        d = np.where(rows >= 0, d, np.iinfo(np.int32).max)
        order = np.lexsort((ids, d), axis=1)[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(d, order, 1).astype(np.int32)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the index to `path` atomically (temporary file + rename)."""
        version = self.model_version.encode("utf-8")
        header = _HEADER.pack(MAGIC, self.num_bits, self.words, len(self), len(version))
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                fh.write(version + b"\0" * (_round64(len(version)) - len(version)))
                fh.write(np.ascontiguousarray(self._codes, np.uint64).tobytes())
                fh.write(np.ascontiguousarray(self._ids, np.int64).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path, mmap=True, expected_model_version=None, backend="exact", faiss_params=None):
        """Open an index file; codes and ids are memory-mapped (read-only) unless mmap=False."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"no index file at {path}")
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            if len(head) < _HEADER.size or head[:8] != MAGIC:
                raise ValueError(f"{path} is not a coophash index file (bad magic)")
            magic, num_bits, words, n, vlen = _HEADER.unpack(head)
            version = fh.read(vlen).decode("utf-8", "replace")
        if num_bits % 8 or words != (num_bits + 63) // 64:
            raise ValueError(f"{path} has an inconsistent header (num_bits {num_bits}, words {words})")
        offset = _HEADER.size + _round64(vlen)
        expected = offset + n * words * 8 + n * 8
        if size != expected:
            raise ValueError(f"{path} is truncated or corrupted: {size} bytes, header implies {expected}")
        if expected_model_version is not None and version != expected_model_version:
            raise ValueError(
                f"{path} was built by model version {version!r}, not {expected_model_version!r}: "
                "codes from different models are not comparable; rebuild the index"
            )
        index = cls(num_bits, version, backend, faiss_params)
        if mmap:
            index._codes = np.memmap(path, np.uint64, "r", offset, (n, words)) if n else index._codes
            index._ids = np.memmap(path, np.int64, "r", offset + n * words * 8, (n,)) if n else index._ids
        else:
            with open(path, "rb") as fh:
                fh.seek(offset)
                index._codes = np.frombuffer(fh.read(n * words * 8), np.uint64).reshape(n, words).copy()
                index._ids = np.frombuffer(fh.read(n * 8), np.int64).copy()
        return index
