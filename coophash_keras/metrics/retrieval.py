"""Retrieval metrics over binary codes: Hamming ranking, mAP@K / mAP@all, precision@K, precision
within a Hamming radius, precision-recall curve. Vectorised numpy, chunked over queries.

Pinned definitions (docs/METRICS.md):
* Ranking: ascending Hamming distance, ties broken by database index (stable sort).
* Relevance: single-label = same class; multi-label = at least one shared label.
* AP@R = (1 / rel_R) * sum_{k<=R} P@k * rel(k), rel_R = relevant items within the top R (the
  convention of DeepHash-pytorch, HashNet, DPSH...). mAP@all is R = database size.
* Queries with no relevant item in the top R have no defined AP: 'zero' counts them as AP 0
  (swuxyj, DPSH, OrthoHash), 'exclude' leaves them out of the mean (thulab DeepHash, HashGAN).
  Both are reported.
* Precision within radius r: relevant / retrieved among items at distance <= r; a query that
  retrieves nothing scores 0.
* PR curve: one point per radius r = 0..K; precision averaged over queries that retrieve something
  at r, recall averaged over queries with at least one relevant item.
"""

import numpy as np

# Memory bounds, so that scoring a database of millions of codes holds O(N) bytes, not O(Q x N):
DATABASE_BLOCK = 65536  # database rows turned into floats at a time for the distance product
CHUNK_ELEMENTS = 1 << 20  # query x database cells per chunk of queries (about 40 bytes each in flight)


def _as_pm1(codes, what):
    """{0,1} or {-1,+1} codes (any numeric dtype) -> float32 {-1,+1}; packed bytes are refused."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{what} must be [N, K] codes, got shape {codes.shape}")
    if codes.dtype == np.uint8 and not np.all((codes == 0) | (codes == 1)):
        raise ValueError(f"{what} look packed (uint8 bytes); unpack them with codes.unpack_codes first")
    return np.where(codes > 0, 1.0, -1.0).astype(np.float32)


def hamming_distances(query_codes, database_codes, block=DATABASE_BLOCK):
    """Hamming distances [Q, N] between {-1,+1} (or {0,1}) codes, as uint16. The database is
    read `block` rows at a time, so no float copy of it is held whole."""
    q = _as_pm1(query_codes, "query codes")
    database_codes = np.asarray(database_codes)
    if database_codes.ndim != 2:
        raise ValueError(f"database codes must be [N, K] codes, got shape {database_codes.shape}")
    if q.shape[1] != database_codes.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits but database codes have {database_codes.shape[1]}")
    k = q.shape[1]
    out = np.empty((len(q), len(database_codes)), np.uint16)
    for start in range(0, len(database_codes), block):
        db = _as_pm1(database_codes[start : start + block], "database codes")
        # For +-1 vectors: hamming = (K - <q, d>) / 2; exact in float32 for K < 2^24.
        out[:, start : start + block] = np.rint((k - q @ db.T) / 2)
    return out


def hamming_rank(query_codes, database_codes, topk=None):
    """Database indices ranked per query by (distance, index); the first `topk` if given."""
    order = np.argsort(hamming_distances(query_codes, database_codes), axis=1, kind="stable")
    return order if topk is None else order[:, :topk]


def relevance_matrix(query_labels, database_labels):
    """Boolean [Q, N]: same class (class ids) or at least one shared label (multi-hot)."""
    ql, dl = np.asarray(query_labels), np.asarray(database_labels)
    if ql.ndim == 1 and dl.ndim == 1:
        return ql[:, None] == dl[None, :]
    if ql.ndim == 2 and dl.ndim == 2:
        return (ql.astype(np.float32) @ dl.astype(np.float32).T) > 0
    raise ValueError(
        f"query labels {ql.shape} and database labels {dl.shape} must both be class ids [N] or both multi-hot [N, C]"
    )


def _check_inputs(query_codes, query_labels, database_codes, database_labels):
    for codes, labels, what in ((query_codes, query_labels, "query"), (database_codes, database_labels, "database")):
        if len(codes) == 0:
            raise ValueError(f"the {what} set is empty")
        if len(codes) != len(labels):
            raise ValueError(f"{len(codes)} {what} codes but {len(labels)} {what} labels")


def retrieval_metrics(
    query_codes, query_labels, database_codes, database_labels, topk=(1000,), radius=2, pr_curve=True, chunk_size=200
):
    """All metrics in one pass over chunks of queries (at most `chunk_size`, fewer for a large
    database: CHUNK_ELEMENTS bounds the query x database arrays in flight). Returns a dict:
    'mAP@all', 'mAP@all_exclude_empty', 'mAP@K', 'mAP@K_exclude_empty', 'P@K' for K in topk,
    'P@r<radius>', and 'pr_curve' {'radius', 'precision', 'recall'}."""
    _check_inputs(query_codes, query_labels, database_codes, database_labels)
    n_db = len(database_codes)
    k_bits = np.asarray(query_codes).shape[1]
    cutoffs = [("all", n_db)] + [(str(k), min(int(k), n_db)) for k in topk]
    for name, k in cutoffs:
        if k <= 0:
            raise ValueError(f"top-K cutoffs must be positive, got {name}")
    ap = {name: [] for name, _ in cutoffs}
    has_rel = {name: [] for name, _ in cutoffs}
    p_at = {name: [] for name, _ in cutoffs[1:]}
    radii = np.arange(k_bits + 1)
    cum_all_parts, cum_rel_parts = [], []
    db_codes = np.asarray(database_codes)
    ranks = np.arange(1, n_db + 1, dtype=np.float64)
    # Queries are independent, so the chunking changes memory, never a number.
    chunk_size = max(1, min(chunk_size, CHUNK_ELEMENTS // n_db))
    for start in range(0, len(query_codes), chunk_size):
        stop = start + chunk_size
        dist = hamming_distances(np.asarray(query_codes)[start:stop], db_codes)
        rel = relevance_matrix(np.asarray(query_labels)[start:stop], database_labels)
        order = np.argsort(dist, axis=1, kind="stable")  # radix sort on uint16: ties keep index order
        rel_sorted = np.take_along_axis(rel, order, axis=1)
        hits = np.cumsum(rel_sorted, axis=1, dtype=np.int32)  # relevant items within the top k
        contrib = np.where(rel_sorted, hits / ranks, 0.0)  # P@k at each relevant rank
        for name, k in cutoffs:
            rel_k = hits[:, k - 1]
            gain = contrib[:, :k].sum(axis=1)
            ap[name].append(np.where(rel_k > 0, gain / np.maximum(rel_k, 1), 0.0))
            has_rel[name].append(rel_k > 0)
            if name != "all":
                p_at[name].append(rel_k / k)
        # Items (and relevant items) within each radius, read off the sorted distances.
        sorted_dist = np.take_along_axis(dist, order, axis=1)
        cum_all = np.stack([np.searchsorted(row, radii, side="right") for row in sorted_dist])
        cum_rel = np.where(cum_all > 0, np.take_along_axis(hits, np.maximum(cum_all - 1, 0), axis=1), 0)
        cum_all_parts.append(cum_all)
        cum_rel_parts.append(cum_rel)
    out = {}
    for name, _ in cutoffs:
        a, h = np.concatenate(ap[name]), np.concatenate(has_rel[name])
        out[f"mAP@{name}"] = float(a.mean())
        out[f"mAP@{name}_exclude_empty"] = float(a[h].mean()) if h.any() else 0.0
        if name != "all":
            out[f"P@{name}"] = float(np.concatenate(p_at[name]).mean())
    cum_all, cum_rel = np.concatenate(cum_all_parts), np.concatenate(cum_rel_parts).astype(np.float64)
    r = min(radius, k_bits)
    out[f"P@r{radius}"] = float(np.where(cum_all[:, r] > 0, cum_rel[:, r] / np.maximum(cum_all[:, r], 1), 0).mean())
    if pr_curve:
        total_rel = cum_rel[:, -1]
        precision, recall = [], []
        for rr in range(k_bits + 1):
            got = cum_all[:, rr] > 0
            precision.append(float((cum_rel[got, rr] / cum_all[got, rr]).mean()) if got.any() else 0.0)
            has = total_rel > 0
            recall.append(float((cum_rel[has, rr] / total_rel[has]).mean()) if has.any() else 0.0)
        out["pr_curve"] = {"radius": list(range(k_bits + 1)), "precision": precision, "recall": recall}
    return out


def mean_average_precision(query_codes, query_labels, database_codes, database_labels, topk=None, empty_queries="zero"):
    """mAP@topk (None = whole database) with the pinned ranking and relevance rules."""
    if empty_queries not in ("zero", "exclude"):
        raise ValueError(f"empty_queries must be 'zero' or 'exclude', got {empty_queries!r}")
    res = retrieval_metrics(
        query_codes, query_labels, database_codes, database_labels, topk=() if topk is None else (topk,), pr_curve=False
    )
    name = "all" if topk is None else str(topk)
    return res[f"mAP@{name}" + ("_exclude_empty" if empty_queries == "exclude" else "")]
