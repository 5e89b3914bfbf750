import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from coophash_keras.codes import pack_codes, sign_codes, unpack_codes
from coophash_keras.metrics import hamming_distances, hamming_rank, mean_average_precision, retrieval_metrics


def random_case(rng, nq=30, ndb=200, bits=16, classes=4, multi=False):
    # Few bits on purpose: many tied distances exercise the tie-breaking rule.
    q = np.where(rng.random((nq, bits)) > 0.5, 1, -1).astype(np.int8)
    db = np.where(rng.random((ndb, bits)) > 0.5, 1, -1).astype(np.int8)
    if multi:
        ql = (rng.random((nq, classes)) > 0.7).astype(np.float32)
        dl = (rng.random((ndb, classes)) > 0.7).astype(np.float32)
    else:
        ql, dl = rng.integers(0, classes, nq), rng.integers(0, classes, ndb)
    return q, ql, db, dl


def brute_force(q, ql, db, dl, topk=None, radius=2):
    """Per-query loops, straight from the definitions in metrics/retrieval.py."""
    n = len(db)
    aps, has, p_at, p_r = [], [], [], []
    for i in range(len(q)):
        dist = [int(np.sum(q[i] != db[j])) for j in range(n)]
        order = sorted(range(n), key=lambda j: (dist[j], j))
        rel = [bool(ql[i] == dl[j]) if np.ndim(ql) == 1 else bool(np.dot(ql[i], dl[j]) > 0) for j in order]
        r = n if topk is None else min(topk, n)
        hits, total = 0, 0.0
        for k in range(r):
            if rel[k]:
                hits += 1
                total += hits / (k + 1)
        aps.append(total / hits if hits else 0.0)
        has.append(hits > 0)
        p_at.append(hits / r)
        within = [j for j in range(n) if dist[j] <= radius]
        good = sum(1 for j in within if (ql[i] == dl[j] if np.ndim(ql) == 1 else np.dot(ql[i], dl[j]) > 0))
        p_r.append(good / len(within) if within else 0.0)
    aps, has = np.array(aps), np.array(has)
    return aps.mean(), (aps[has].mean() if has.any() else 0.0), np.mean(p_at), np.mean(p_r)


@pytest.mark.parametrize("seed", range(4))
def test_map_all_matches_sklearn_with_ties_broken_by_index(seed):
    rng = np.random.default_rng(seed)
    q, ql, db, dl = random_case(rng)
    dist = hamming_distances(q, db)
    expected = []
    for i in range(len(q)):
        y = ql[i] == dl
        if not y.any():
            expected.append(0.0)
            continue
        # Strictly decreasing score that encodes "distance, then database index".
        score = -(dist[i].astype(float) + np.arange(len(db)) / (len(db) + 1))
        expected.append(average_precision_score(y, score))
    got = mean_average_precision(q, ql, db, dl)
    assert got == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("topk", [None, 1, 17, 500])
def test_all_metrics_match_brute_force(multi, topk):
    rng = np.random.default_rng(7 + (topk or 0))
    q, ql, db, dl = random_case(rng, nq=25, ndb=120, bits=8, classes=6, multi=multi)
    m0, m_excl, p_at, p_r = brute_force(q, ql, db, dl, topk=topk)
    res = retrieval_metrics(q, ql, db, dl, topk=() if topk is None else (topk,), radius=2, chunk_size=7)
    name = "all" if topk is None else str(topk)
    assert res[f"mAP@{name}"] == pytest.approx(m0, abs=1e-12)
    assert res[f"mAP@{name}_exclude_empty"] == pytest.approx(m_excl, abs=1e-12)
    if topk is not None:
        assert res[f"P@{topk}"] == pytest.approx(p_at, abs=1e-12)
    assert res["P@r2"] == pytest.approx(p_r, abs=1e-12)


@pytest.mark.parametrize("multi", [False, True])
def test_memory_bounds_change_no_number(monkeypatch, multi):
    # Tiny bounds force one query per chunk and 7-row database blocks: every metric must be the
    # same to the last bit as with one chunk and one block.
    from coophash_keras.metrics import retrieval as retrieval_module

    q, ql, db, dl = random_case(np.random.default_rng(3), nq=40, ndb=150, bits=8, classes=5, multi=multi)
    whole = retrieval_metrics(q, ql, db, dl, topk=(10, 100), chunk_size=1000)
    monkeypatch.setattr(retrieval_module, "CHUNK_ELEMENTS", 150)
    np.testing.assert_array_equal(hamming_distances(q, db, block=7), hamming_distances(q, db))
    assert retrieval_metrics(q, ql, db, dl, topk=(10, 100), chunk_size=1000) == whole


def test_scoring_a_large_database_holds_memory_linear_in_its_size():
    # 64 queries against 400,000 codes: scored all at once, the query x database arrays would
    # take about 64 x 400,000 x 40 bytes = 1 GB; the chunking keeps them to CHUNK_ELEMENTS cells.
    import tracemalloc

    rng = np.random.default_rng(0)
    db = np.where(rng.random((400_000, 16)) > 0.5, 1, -1).astype(np.int8)  # 6.4 MB
    q, ql, dl = db[:64].copy(), rng.integers(0, 10, 64), rng.integers(0, 10, len(db))
    tracemalloc.start()
    try:
        retrieval_metrics(q, ql, db, dl, topk=(1000,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150e6, f"peak {peak / 1e6:.0f} MB"


def test_empty_query_conventions_differ_when_a_query_has_no_relevant_item():
    q = np.array([[1] * 8, [-1] * 8], np.int8)
    db = np.array([[1] * 8, [1] * 7 + [-1]], np.int8)
    ql, dl = np.array([0, 5]), np.array([0, 0])  # query 1 has no relevant item
    assert mean_average_precision(q, ql, db, dl, empty_queries="zero") == pytest.approx(0.5)
    assert mean_average_precision(q, ql, db, dl, empty_queries="exclude") == pytest.approx(1.0)


def test_ranking_breaks_ties_by_index_and_pr_curve_ends_at_full_recall():
    q = np.array([[1, 1, 1, 1, 1, 1, 1, 1]], np.int8)
    db = np.array([[1] * 7 + [-1], [1] * 8, [1] * 7 + [-1], [1] * 8], np.int8)
    np.testing.assert_array_equal(hamming_rank(q, db), [[1, 3, 0, 2]])
    res = retrieval_metrics(q, np.array([0]), db, np.array([0, 1, 0, 1]), topk=(2,))
    pr = res["pr_curve"]
    assert pr["recall"][-1] == pytest.approx(1.0)
    assert pr["precision"][0] == pytest.approx(0.0) and pr["precision"][1] == pytest.approx(0.5)


def test_metric_input_errors():
    q = np.ones((2, 8), np.int8)
    with pytest.raises(ValueError, match="bits"):
        hamming_distances(q, np.ones((2, 16), np.int8))
    with pytest.raises(ValueError, match="empty"):
        retrieval_metrics(q[:0], np.zeros(0), q, np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        retrieval_metrics(q, np.zeros(3), q, np.zeros(2))
    with pytest.raises(ValueError, match="packed"):
        hamming_distances(np.full((2, 1), 200, np.uint8), np.full((2, 1), 7, np.uint8))


def test_codes_sign_and_pack_round_trip():
    relaxed = np.array([[0.3, -0.2, 0.0, -1.0, 1.0, 0.5, -0.5, 0.1]])
    codes = sign_codes(relaxed)
    np.testing.assert_array_equal(codes, [[1, -1, 1, -1, 1, 1, -1, 1]])  # sign(0) := +1
    packed = pack_codes(codes)
    assert packed.dtype == np.uint8 and packed.tolist() == [[0b10101101]]
    np.testing.assert_array_equal(unpack_codes(packed), codes)
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_codes(np.ones((1, 12)))
