"""HammingIndex: compact binary codes (K/8 bytes each) with ids and optional file paths; exact
top-k and radius search in a C kernel; FAISS backends; a checksummed single-file format that is
memory-mapped on load (see storage.py for the layout).

Ids cost nothing when they are consecutive (the default 0, 1, 2, ... or any start, start + 1, ...),
4 bytes per code when they fit int32 and 8 otherwise. Paths (one string per item, e.g. the image
file a code came from) are optional: all items of an index have one or none do."""

import numpy as np

from coophash_keras.index import kernel, storage

BACKENDS = ("exact", "faiss-flat", "faiss-ivf", "faiss-hash")
MISSING = np.iinfo(np.int64).max  # the id an approximate backend returns when it found fewer than k


def _compact_ids(ids):
    """int64 ids -> (None, start) if consecutive, else (int32 or int64 array, 0)."""
    if len(ids) == 0:
        return None, 0
    start = int(ids[0])
    if ids[-1] - start == len(ids) - 1 and np.array_equal(ids, np.arange(start, start + len(ids))):
        return None, start
    info = np.iinfo(np.int32)
    if ids.min() >= info.min and ids.max() <= info.max:
        return ids.astype(np.int32), 0
    return ids.astype(np.int64), 0


def _encode_paths(paths, count):
    """A list of str -> (uint64 offsets [count + 1], utf-8 blob uint8)."""
    if isinstance(paths, (str, bytes)) or not hasattr(paths, "__len__"):
        raise ValueError(f"paths must be a list of {count} strings, got {type(paths).__name__}")
    if len(paths) != count:
        raise ValueError(f"{count} codes need {count} paths, got {len(paths)}")
    encoded = []
    for p in paths:
        if not isinstance(p, str):
            raise ValueError(f"paths must be strings, got {type(p).__name__} {p!r}")
        encoded.append(p.encode("utf-8", "surrogateescape"))
    offsets = np.zeros(count + 1, np.uint64)
    offsets[1:] = np.cumsum([len(e) for e in encoded], dtype=np.uint64)
    return offsets, np.frombuffer(b"".join(encoded), np.uint8)


class HammingIndex:
    """Exact (C kernel, all cores) or FAISS-backed search over K-bit codes, K a multiple of 8."""

    def __init__(self, num_bits, model_version="", backend="exact", faiss_params=None):
        if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)) or num_bits <= 0 or num_bits % 8:
            raise ValueError(f"num_bits must be a positive multiple of 8, got {num_bits}")
        if num_bits > 65535:
            raise ValueError(f"num_bits must be at most 65535 (distances are uint16), got {num_bits}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.num_bits = int(num_bits)
        self.nbytes_per_code = self.num_bits // 8
        self.model_version = str(model_version)
        self.backend = backend
        self.faiss_params = dict(faiss_params or {})
        self._codes = np.zeros((0, self.nbytes_per_code), np.uint8)
        self._ids = None  # None: consecutive ids from _id_start
        self._id_start = 0
        self._paths = None  # None or (offsets uint64 [n + 1], blob uint8)
        self._changed()

    # ------------------------------------------------------------------ codes in, codes out
    def _pack(self, codes, what="codes"):
        """int8 {-1,+1} (or 0/1) [N, K] or packed uint8 [N, K/8] -> packed uint8 [N, K/8]."""
        arr = np.asarray(codes)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise ValueError(
                f"{what} must be [N, {self.num_bits}] ±1 codes or [N, {self.nbytes_per_code}] packed uint8, "
                f"got shape {arr.shape}"
            )
        if arr.dtype == np.uint8 and arr.shape[1] == self.nbytes_per_code:
            return np.ascontiguousarray(arr)
        if arr.shape[1] == self.num_bits and arr.dtype.kind in "iuf":
            if not np.all((arr == 1) | (arr == -1) | (arr == 0)):
                raise ValueError(f"{what} with {self.num_bits} columns must hold ±1 (or 0/1) values")
            return np.packbits(arr > 0, axis=1)
        if arr.dtype == np.uint8:
            raise ValueError(
                f"packed {what} must have {self.nbytes_per_code} bytes per code for {self.num_bits} bits, "
                f"got {arr.shape[1]}"
            )
        raise ValueError(
            f"{what} must have {self.num_bits} bits: ±1 codes [N, {self.num_bits}] or packed uint8 "
            f"[N, {self.nbytes_per_code}], got {arr.dtype} {arr.shape}"
        )

    def packed_codes(self):
        """The codes, uint8 [n, K/8] (np.packbits order: bit 1 = +1)."""
        return self._codes

    @property
    def ids(self):
        """All ids, int64 [n], in row order."""
        if self._ids is None:
            return np.arange(self._id_start, self._id_start + len(self._codes), dtype=np.int64)
        return np.asarray(self._ids, np.int64)

    @property
    def has_paths(self):
        return self._paths is not None

    @property
    def nbytes(self):
        """Memory (and, within 64 bytes a part, file size) of the codes, ids and paths."""
        size = self._codes.nbytes + (0 if self._ids is None else self._ids.nbytes)
        return size + (0 if self._paths is None else self._paths[0].nbytes + self._paths[1].nbytes)

    def __len__(self):
        return len(self._codes)

    def __contains__(self, item):
        return bool(self._rows_of(np.array([item], np.int64))[1][0])

    def _rows_of(self, ids):
        """int64 ids (any shape) -> (rows, found): the row of each id, and whether it is here."""
        ids = np.asarray(ids, np.int64)
        if self._ids is None:
            rows = ids - self._id_start
            found = (rows >= 0) & (rows < len(self))
            return np.where(found, rows, 0), found
        if self._sorter is None:
            self._sorter = np.argsort(self._ids, kind="stable")
        ordered = np.asarray(self._ids)[self._sorter]
        pos = np.minimum(np.searchsorted(ordered, ids), max(len(ordered) - 1, 0))
        found = (ordered[pos] == ids) if len(ordered) else np.zeros(ids.shape, bool)
        return np.where(found, self._sorter[pos] if len(ordered) else 0, 0), found

    def paths_for(self, ids):
        """The stored path of each id, as an object array of the same shape as `ids` (e.g. the
        [Q, k] ids that search returns). MISSING ids (approximate backends) map to None; an id not
        in the index is a KeyError; an index without paths is a ValueError."""
        if self._paths is None:
            raise ValueError("this index stores no paths (build it with paths=...)")
        ids = np.asarray(ids, np.int64)
        rows, found = self._rows_of(ids)
        bad = ~found & (ids != MISSING)
        if bad.any():
            raise KeyError(f"ids not in the index: {ids[bad][:10].tolist()}")
        offsets, blob = self._paths
        rows, found = rows.ravel(), found.ravel()
        out = np.empty(rows.shape, object)
        for j in np.flatnonzero(found):
            r = rows[j]
            out[j] = bytes(blob[int(offsets[r]) : int(offsets[r + 1])]).decode("utf-8", "surrogateescape")
        return out.reshape(ids.shape)

    # ------------------------------------------------------------------ mutation
    def add(self, codes, ids=None, paths=None):
        """Append codes with int ids (default: continuing integers) and, if the index keeps paths,
        one path string per code. Bad input (shape, dtype, duplicate or clashing ids, missing or
        extra paths) raises and adds nothing."""
        packed = self._pack(codes)
        m = len(packed)
        if ids is None:  # continuing integers: unique by construction
            start = (int(self.ids.max()) + 1) if len(self) else self._id_start
            new_ids = np.arange(start, start + m, dtype=np.int64)
        else:
            new_ids = np.asarray(ids)
            if new_ids.ndim != 1 or len(new_ids) != m:
                raise ValueError(f"{m} codes need {m} ids, got shape {new_ids.shape}")
            if new_ids.dtype.kind not in "iu":
                raise ValueError(f"ids must be integers, got {new_ids.dtype}")
            if new_ids.dtype == np.uint64 and m and new_ids.max() > np.iinfo(np.int64).max:
                raise ValueError("ids must fit int64")
            new_ids = new_ids.astype(np.int64)
            if m and new_ids.max() == MISSING:
                raise ValueError(f"id {MISSING} is reserved (it marks a missing neighbour)")
            uniq, counts = np.unique(new_ids, return_counts=True)
            if (counts > 1).any():
                raise ValueError(f"duplicate ids in this batch: {uniq[counts > 1][:10].tolist()}")
            clash = new_ids[self._rows_of(new_ids)[1]] if len(self) else new_ids[:0]
            if clash.size:
                raise ValueError(f"ids already in the index: {clash[:10].tolist()}")
        if len(self) and (paths is None) != (self._paths is None):
            raise ValueError(
                "this index stores a path per item: pass paths=[...]"
                if paths is None
                else "this index stores no paths: add codes without paths (or build a new index with them)"
            )
        new_paths = None if paths is None else _encode_paths(paths, m)
        # everything is checked: now change the index
        all_ids = np.concatenate([self.ids, new_ids])
        self._codes = np.concatenate([np.asarray(self._codes), packed])
        self._ids, self._id_start = _compact_ids(all_ids) if len(all_ids) else (None, self._id_start)
        if new_paths is not None:
            if self._paths is None:
                self._paths = new_paths
            else:
                offsets, blob = self._paths
                self._paths = (
                    np.concatenate([np.asarray(offsets), new_paths[0][1:] + offsets[-1]]),
                    np.concatenate([np.asarray(blob), new_paths[1]]),
                )
        self._changed()
        return self

    def remove(self, ids):
        """Remove these ids (all must be present; otherwise nothing is removed). Returns the count."""
        ids = np.unique(np.asarray(ids, np.int64))
        rows, found = self._rows_of(ids)
        if not found.all():
            raise KeyError(f"ids not in the index: {ids[~found][:10].tolist()}")
        keep = np.ones(len(self), bool)
        keep[rows] = False
        kept_ids = self.ids[keep]
        self._codes = np.asarray(self._codes)[keep]
        if self._paths is not None:
            offsets, blob = self._paths
            parts = [bytes(blob[int(offsets[r]) : int(offsets[r + 1])]) for r in np.flatnonzero(keep)]
            new = np.zeros(len(parts) + 1, np.uint64)
            new[1:] = np.cumsum([len(p) for p in parts], dtype=np.uint64)
            self._paths = (new, np.frombuffer(b"".join(parts), np.uint8))
        self._ids, self._id_start = _compact_ids(kept_ids)
        self._changed()
        return int(len(ids))

    def _changed(self):
        self._sorter = None
        self._faiss = None
        self._ids_increasing = None

    def _increasing(self):
        if self._ids_increasing is None:
            self._ids_increasing = bool(self._ids is None or len(self) < 2 or np.all(np.diff(self._ids) > 0))
        return self._ids_increasing

    # ------------------------------------------------------------------ search
    def _check_k(self, k):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > len(self):
            raise ValueError(f"k={k} is larger than the index ({len(self)} codes)")

    def search(self, queries, k):
        """Top-k ids and Hamming distances per query, ordered by (distance, id): int64 / int32 [Q, k].
        FAISS approximate backends may miss true neighbours (MISSING ids); all break ties by id.
        The exact kernel path is the best the CPU has unless COOPHASH_KERNEL names one."""
        self._check_k(k)
        q = self._pack(queries, "queries")
        if self.backend == "exact":
            return kernel.topk(self._codes, self._ids, q, int(k), self._id_start, self._increasing())
        return self._faiss_search(q, int(k))

    def radius_search(self, queries, radius):
        """Per query, (ids, distances) of every code within `radius`, ordered by (distance, id)."""
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
            raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
        if len(self) == 0:
            raise ValueError("the index is empty")
        q = self._pack(queries, "queries")
        ids = self.ids
        out = []
        chunk = max(1, int(2**27 // max(len(self), 1)))  # about 256 MB of uint16 distances at a time
        for start in range(0, len(q), chunk):
            dist = kernel.distances(self._codes, q[start : start + chunk])
            for row in dist:
                hit = np.flatnonzero(row <= radius)
                order = np.lexsort((ids[hit], row[hit]))
                out.append((ids[hit][order], row[hit][order].astype(np.int32)))
        return out

    # ------------------------------------------------------------------ FAISS
    def _build_faiss(self):
        import faiss

        packed = np.ascontiguousarray(self._codes)
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

    def _faiss_search(self, q, k):
        if self._faiss is None:
            self._build_faiss()
        # Over-fetch so ties at the k-th distance can be re-ordered by id as in the exact backend.
        fetch = min(len(self), k + 64)
        d, rows = self._faiss.search(q, fetch)
        ids = np.where(rows >= 0, self.ids[np.maximum(rows, 0)], MISSING)
        d = np.where(rows >= 0, d, np.iinfo(np.int32).max)
        order = np.lexsort((ids, d), axis=1)[:, :k]
        return np.take_along_axis(ids, order, 1), np.take_along_axis(d, order, 1).astype(np.int32)

    # ------------------------------------------------------------------ persistence
    def save(self, path):
        """Write the index to `path` atomically (temporary file + rename); returns `path`."""
        data = storage.IndexData(self.num_bits, self._codes, self._ids, self._id_start, self._paths, self.model_version)
        return storage.save(path, data)

    @classmethod
    def load(cls, path, mmap=True, expected_model_version=None, backend="exact", faiss_params=None, verify=True):
        """Open an index file. Codes, ids and paths are memory-mapped read-only unless mmap=False (a
        mapped index can still grow: add/remove copy, the file is untouched). verify=False skips the
        checksums of the codes, ids and paths (they read the whole file once, ~4 ms per 1M 64-bit
        codes); a corrupted file is then not detected. expected_model_version: refuse an index built
        by another model (codes from different models are not comparable)."""
        data = storage.load(path, mmap=mmap, verify=verify)
        if expected_model_version is not None and data.model_version != expected_model_version:
            raise ValueError(
                f"{path} was built by model version {data.model_version!r}, not {expected_model_version!r}: "
                "codes from different models are not comparable; rebuild the index"
            )
        index = cls(data.num_bits, data.model_version, backend, faiss_params)
        index._codes, index._paths = data.codes, data.paths
        if data.legacy:
            index._ids, index._id_start = _compact_ids(data.ids)  # a version 001 file: compact its ids now
        else:
            index._ids, index._id_start = data.ids, data.id_start
        return index
