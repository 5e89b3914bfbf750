import os

import numpy as np
import pytest

from coophash_keras.index import HammingIndex, kernel
from coophash_keras.metrics import hamming_distances


def random_codes(rng, n, bits, p=0.5):
    return np.where(rng.random((n, bits)) < p, 1, -1).astype(np.int8)


def brute_topk(queries, codes, ids, k):
    d = hamming_distances(queries, codes).astype(np.int64)
    out_ids, out_d = [], []
    for row in d:
        order = np.lexsort((ids, row))[:k]
        out_ids.append(ids[order])
        out_d.append(row[order])
    return np.array(out_ids), np.array(out_d)


@pytest.mark.parametrize("bits", [8, 24, 64, 72, 128, 192])
@pytest.mark.parametrize("use_c", [True, False])
@pytest.mark.parametrize("ids_order", ["shuffled", "increasing"])
def test_exact_search_equals_brute_force_with_ties(bits, use_c, ids_order, monkeypatch):
    rng = np.random.default_rng(bits)
    # few distinct codes -> many ties, broken by id; shuffled ids take the kernel's non-strict path
    base = random_codes(rng, 7, bits)
    codes = base[rng.integers(0, 7, 600)]
    codes[::5] = random_codes(rng, 120, bits)
    ids = rng.permutation(10_000)[:600].astype(np.int64)
    if ids_order == "increasing":
        ids = np.sort(ids)
    queries = random_codes(rng, 25, bits)
    index = HammingIndex(bits).add(codes, ids)
    for k in (1, 9, 64, 600):
        if not use_c:
            monkeypatch.setattr(kernel, "load", lambda: None)
        got_ids, got_d = index.search(queries, k)
        ref_ids, ref_d = brute_topk(queries, codes, ids, k)
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_ids, ref_ids)


def test_radius_search_equals_brute_force():
    rng = np.random.default_rng(1)
    codes = random_codes(rng, 500, 16)
    ids = np.arange(1000, 1500)
    index = HammingIndex(16).add(np.packbits(codes > 0, axis=1), ids)  # packed input
    queries = random_codes(rng, 10, 16)
    d = hamming_distances(queries, codes)
    for r in (0, 3, 6):
        for q, (got_ids, got_d) in enumerate(index.radius_search(queries, r)):
            hit = np.flatnonzero(d[q] <= r)
            order = np.lexsort((ids[hit], d[q][hit]))
            np.testing.assert_array_equal(got_ids, ids[hit][order])
            np.testing.assert_array_equal(got_d, d[q][hit][order])


def test_add_remove_and_errors_leave_index_intact():
    rng = np.random.default_rng(2)
    index = HammingIndex(32, "m1").add(random_codes(rng, 10, 32))
    assert len(index) == 10 and index.ids.tolist() == list(range(10))
    index.add(random_codes(rng, 5, 32))  # ids continue at 10
    assert index.ids.tolist() == list(range(15))
    before = (index.packed_codes().copy(), index.ids.copy())
    with pytest.raises(ValueError, match="already in the index"):
        index.add(random_codes(rng, 2, 32), [3, 99])
    with pytest.raises(ValueError, match="duplicate ids"):
        index.add(random_codes(rng, 2, 32), [50, 50])
    with pytest.raises(ValueError, match="32 bits"):
        index.add(random_codes(rng, 2, 16))
    with pytest.raises(ValueError, match="4 bytes"):
        index.add(np.zeros((2, 3), np.uint8))
    with pytest.raises(ValueError, match="±1"):
        index.add(np.full((2, 32), 5))
    with pytest.raises(ValueError, match="integers"):
        index.add(random_codes(rng, 1, 32), [1.5])
    with pytest.raises(KeyError, match="not in the index"):
        index.remove([1, 777])
    np.testing.assert_array_equal(index.packed_codes(), before[0])
    np.testing.assert_array_equal(index.ids, before[1])
    assert index.remove([1, 2]) == 2 and 1 not in index and 3 in index
    for bad_k in (0, -1, 14, 2.5):
        with pytest.raises(ValueError, match="k"):
            index.search(random_codes(rng, 1, 32), bad_k)
    with pytest.raises(ValueError, match="multiple of 8"):
        HammingIndex(12)
    with pytest.raises(ValueError, match="backend"):
        HammingIndex(16, backend="annoy")


def test_save_load_mmap_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    codes = random_codes(rng, 300, 72)
    index = HammingIndex(72, "model-abc").add(codes, np.arange(300) * 7)
    path = str(tmp_path / "codes.idx")
    index.save(path)
    for mmap in (True, False):
        back = HammingIndex.load(path, mmap=mmap, expected_model_version="model-abc")
        assert back.num_bits == 72 and back.model_version == "model-abc" and len(back) == 300
        assert isinstance(back._codes, np.memmap) == mmap
        q = random_codes(rng, 5, 72)
        for a, b in zip(back.search(q, 11), index.search(q, 11)):
            np.testing.assert_array_equal(a, b)
    back = HammingIndex.load(path)
    back.add(random_codes(rng, 2, 72), [1, 2])  # a mapped index can still grow (copy, file untouched)
    assert len(HammingIndex.load(path)) == 300
    HammingIndex(16).save(str(tmp_path / "empty.idx"))
    assert len(HammingIndex.load(str(tmp_path / "empty.idx"))) == 0


def test_bad_index_files(tmp_path):
    rng = np.random.default_rng(4)
    path = str(tmp_path / "i.idx")
    HammingIndex(64, "v1").add(random_codes(rng, 50, 64)).save(path)
    with pytest.raises(ValueError, match="model version"):
        HammingIndex.load(path, expected_model_version="v2")
    data = open(path, "rb").read()
    open(tmp_path / "trunc.idx", "wb").write(data[:-13])
    with pytest.raises(ValueError, match="truncated"):
        HammingIndex.load(str(tmp_path / "trunc.idx"))
    open(tmp_path / "foreign.idx", "wb").write(b"PK\x03\x04" + data[4:])
    with pytest.raises(ValueError, match="not a coophash index"):
        HammingIndex.load(str(tmp_path / "foreign.idx"))
    with pytest.raises(FileNotFoundError):
        HammingIndex.load(str(tmp_path / "none.idx"))
    # a failed save never replaces a good file
    bad = HammingIndex(64)
    bad._ids = "not an array"
    with pytest.raises(ValueError):
        bad.save(path)
    assert len(HammingIndex.load(path)) == 50 and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


@pytest.mark.parametrize("backend", ["faiss-flat", "faiss-ivf", "faiss-hash"])
def test_faiss_backends(backend):
    rng = np.random.default_rng(5)
    codes = random_codes(rng, 2000, 32)
    ids = np.arange(2000) + 10
    queries = np.concatenate([codes[:20], random_codes(rng, 20, 32)])
    exact = HammingIndex(32).add(codes, ids)
    approx = HammingIndex(32, backend=backend, faiss_params={"nprobe": 64, "nflip": 3}).add(codes, ids)
    got_ids, got_d = approx.search(queries, 10)
    ref_ids, ref_d = exact.search(queries, 10)
    assert (got_d >= 0).all() and np.all(np.diff(got_d, axis=1) >= 0)
    # every code finds itself at distance 0
    np.testing.assert_array_equal(got_ids[:20, 0], ids[:20])
    if backend == "faiss-flat":  # exact: same distances, same ids (ties re-ordered by id)
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_ids, ref_ids)
    # approximate backends may miss neighbours, but what they return is at its true distance
    true_d = hamming_distances(queries, codes)
    valid = got_ids < np.iinfo(np.int64).max
    rows = np.where(valid, got_ids - 10, 0)
    np.testing.assert_array_equal(np.take_along_axis(true_d, rows, 1)[valid], got_d[valid])
    if backend == "faiss-ivf":  # nprobe 64 of ~44 lists: every list is probed
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got_ids, ref_ids)])
        assert recall > 0.9
