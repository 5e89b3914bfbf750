"""Milvus as a distributed backend: a collection of BINARY_VECTOR codes searched with the HAMMING
metric, behind the HammingIndex search API.

    MilvusIndex.export(index, "http://milvus:19530", "codes")   # or a local file: milvus-lite
    remote = MilvusIndex("http://milvus:19530", "codes")
    ids, distances = remote.search(packed_queries, k=10)        # ordered by (distance, id)
    remote.paths_for(ids)

The same pymilvus client code talks to a Milvus cluster (URI http://host:19530) and to milvus-lite
(URI = a local file such as ./codes.db, embedded, for tests and small databases). milvus-lite 2.x
supports BINARY_VECTOR + HAMMING with the BIN_FLAT index only; milvus-lite 3.x dropped binary
vectors. A cluster also has BIN_IVF_FLAT (index_type=..., nlist, search nprobe).

Collection: id INT64 (primary key), code BINARY_VECTOR(dim=K), path VARCHAR (only if the index
has paths); the schema description records num_bits and the model version, so a server can refuse
a collection built by another model.

Ties: Milvus returns tied codes in its own order (insertion order in milvus-lite) and, at the k-th
distance, may return a different subset of the tied codes than the exact index. Results are
re-sorted by (distance, id) after fetching up to k + 64 neighbours, so they equal the exact
index's results except for which ids among ties at the k-th distance are included.
"""

import contextlib
import re

import numpy as np

MAX_LIMIT = 16384  # Milvus's largest top-k
_DESCRIPTION = re.compile(r"coophash num_bits=(\d+) model_version=(\S*)")


def _client(uri, token=None):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ValueError("the Milvus backend needs pymilvus (and milvus-lite for a local file): pip install "
                         "pymilvus 'milvus-lite<3'") from None  # fmt: skip
    try:
        return MilvusClient(uri, token=token or "")
    except Exception as exc:  # pymilvus raises its own types for unreachable servers and bad files
        raise ValueError(f"cannot connect to Milvus at {uri}: {exc}") from None


@contextlib.contextmanager
def _errors(uri):
    """Milvus's own exceptions (a server down, a refused request) -> one-line ValueErrors."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise ValueError(f"Milvus at {uri}: {exc.message}") from None


def parse_target(spec):
    """'milvus:URI#COLLECTION' -> (URI, COLLECTION); the one syntax of export and serve."""
    if not spec.startswith("milvus:") or "#" not in spec:
        raise ValueError(
            f"a Milvus target is milvus:URI#COLLECTION (e.g. milvus:http://host:19530#codes), got {spec!r}"
        )
    uri, _, collection = spec[len("milvus:") :].rpartition("#")
    if not uri or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", collection):
        raise ValueError(f"bad Milvus target {spec!r}: need a URI and a collection name of letters, digits and _")
    return uri, collection


class MilvusIndex:
    """Search a Milvus collection of K-bit codes with HammingIndex's search / paths_for API."""

    def __init__(self, uri, collection, token=None, search_params=None):
        self.uri, self.collection = uri, collection
        self.search_params = dict(search_params or {})
        self._client = _client(uri, token)
        with _errors(uri):
            self._describe(uri, collection)

    def _describe(self, uri, collection):
        if not self._client.has_collection(collection):
            raise ValueError(f"no collection {collection!r} in Milvus at {uri} (export one: coophash index export)")
        info = self._client.describe_collection(collection)
        match = _DESCRIPTION.fullmatch(info.get("description", ""))
        if match is None:
            raise ValueError(f"collection {collection!r} at {uri} was not written by coophash index export")
        self.num_bits, self.model_version = int(match.group(1)), match.group(2)
        self.nbytes_per_code = self.num_bits // 8
        self.has_paths = any(f["name"] == "path" for f in info["fields"])
        self.backend = "milvus"

    def __len__(self):
        with _errors(self.uri):
            return int(self._client.get_collection_stats(self.collection)["row_count"])

    def close(self):
        self._client.close()

    # ------------------------------------------------------------------ export
    @classmethod
    def export(cls, index, uri, collection, overwrite=False, token=None, index_type="BIN_FLAT", nlist=1024,
               batch=20_000):  # fmt: skip
        """Write a HammingIndex's codes, ids and paths to a new collection; returns a MilvusIndex.
        An existing collection is refused unless overwrite=True: it is then dropped once the new
        data is ready to go (Milvus has no atomic replace in milvus-lite; on a cluster, export to a
        new name and switch an alias)."""
        if index_type not in ("BIN_FLAT", "BIN_IVF_FLAT"):
            raise ValueError(f"index_type must be BIN_FLAT or BIN_IVF_FLAT, got {index_type!r}")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", collection):
            raise ValueError(f"a Milvus collection name is letters, digits and _, got {collection!r}")
        if re.search(r"\s", index.model_version):
            raise ValueError(f"model version {index.model_version!r} contains whitespace")

        client = _client(uri, token)
        with _errors(uri):
            cls._write(client, index, uri, collection, overwrite, index_type, nlist, batch)
        client.close()
        return cls(uri, collection, token)

    @staticmethod
    def _write(client, index, uri, collection, overwrite, index_type, nlist, batch):
        from pymilvus import DataType

        if client.has_collection(collection) and not overwrite:
            raise ValueError(f"collection {collection!r} exists in Milvus at {uri}; pass overwrite (--overwrite)")
        ids, codes = index.ids, index.packed_codes()
        paths = index.paths_for(ids) if index.has_paths else None
        longest = max((len(p.encode("utf-8", "surrogateescape")) for p in paths), default=1) if paths is not None else 0
        if longest > 65535:
            raise ValueError(f"a path of {longest} bytes is longer than Milvus's VARCHAR limit (65535)")
        schema = client.create_schema(
            auto_id=False, description=f"coophash num_bits={index.num_bits} model_version={index.model_version}"
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("code", DataType.BINARY_VECTOR, dim=index.num_bits)
        if paths is not None:
            schema.add_field("path", DataType.VARCHAR, max_length=max(256, longest))
        params = client.prepare_index_params()
        extra = {"nlist": int(nlist)} if index_type == "BIN_IVF_FLAT" else {}
        params.add_index("code", index_type=index_type, metric_type="HAMMING", params=extra)
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.create_collection(collection, schema=schema, index_params=params, consistency_level="Strong")
        for start in range(0, len(ids), batch):
            rows = []
            for j in range(start, min(start + batch, len(ids))):
                row = {"id": int(ids[j]), "code": codes[j].tobytes()}
                if paths is not None:
                    row["path"] = paths[j]
                rows.append(row)
            client.insert(collection, rows)
        client.flush(collection)

    # ------------------------------------------------------------------ search
    def _pack(self, queries):
        arr = np.asarray(queries)
        arr = arr[None] if arr.ndim == 1 else arr
        if arr.ndim == 2 and arr.dtype == np.uint8 and arr.shape[1] == self.nbytes_per_code:
            return arr
        if arr.ndim == 2 and arr.shape[1] == self.num_bits and np.all((arr == 1) | (arr == -1) | (arr == 0)):
            return np.packbits(arr > 0, axis=1)
        raise ValueError(
            f"queries must be [N, {self.num_bits}] ±1 codes or [N, {self.nbytes_per_code}] packed uint8, "
            f"got {arr.dtype} {arr.shape}"
        )

    def search(self, queries, k):
        """Top-k (ids int64, distances int32) [Q, k] ordered by (distance, id); see the module
        docstring for ties at the k-th distance. Missing neighbours (fewer than k codes) are MISSING."""
        from coophash_keras.index.hamming_index import MISSING

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0 or k > MAX_LIMIT:
            raise ValueError(f"k must be an integer in [1, {MAX_LIMIT}] for Milvus, got {k!r}")
        q = self._pack(queries)
        fetch = min(MAX_LIMIT, int(k) + 64)
        params = {"metric_type": "HAMMING", "params": self.search_params}
        out_ids = np.full((len(q), fetch), MISSING, np.int64)
        out_d = np.full((len(q), fetch), np.iinfo(np.int32).max, np.int32)
        for start in range(0, len(q), 1000):
            data = [row.tobytes() for row in q[start : start + 1000]]
            with _errors(self.uri):
                hits = self._client.search(
                    self.collection, data=data, limit=fetch, anns_field="code", search_params=params
                )
            for i, row in enumerate(hits):
                out_ids[start + i, : len(row)] = [h["id"] for h in row]
                out_d[start + i, : len(row)] = [int(round(h["distance"])) for h in row]
        order = np.lexsort((out_ids, out_d), axis=1)[:, :k]
        return np.take_along_axis(out_ids, order, 1), np.take_along_axis(out_d, order, 1)

    def paths_for(self, ids):
        """Stored path per id, same shape as `ids`; MISSING -> None; unknown ids are a KeyError."""
        from coophash_keras.index.hamming_index import MISSING

        if not self.has_paths:
            raise ValueError(f"collection {self.collection!r} stores no paths")
        ids = np.asarray(ids, np.int64)
        wanted = sorted({int(i) for i in ids.ravel() if i != MISSING})
        found = {}
        for start in range(0, len(wanted), 1000):
            with _errors(self.uri):
                rows = self._client.get(self.collection, ids=wanted[start : start + 1000], output_fields=["path"])
            for row in rows:
                found[int(row["id"])] = row["path"]
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"ids not in the collection: {missing[:10]}")
        out = np.empty(ids.size, object)
        for j, i in enumerate(ids.ravel()):
            out[j] = None if i == MISSING else found[int(i)]
        return out.reshape(ids.shape)
