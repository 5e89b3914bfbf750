import os

import numpy as np
import pytest

from coophash_keras.index import MISSING, HammingIndex, kernel
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


KERNEL_PATHS = ["generic", "avx2", "avx512", "numpy"]


def use_kernel_path(path, monkeypatch):
    """Force one kernel path (COOPHASH_KERNEL), or the numpy fallback; skip paths this CPU lacks."""
    if path == "numpy":
        monkeypatch.setattr(kernel, "load", lambda: None)
        return
    if path not in kernel.available_paths():
        pytest.skip(f"this CPU has no {path} path ({kernel.available_paths()})")
    monkeypatch.setenv("COOPHASH_KERNEL", path)


def tied_codes(rng, n, bits):
    """Few distinct codes plus some random ones: many ties, which must be broken by id."""
    codes = random_codes(rng, 7, bits)[rng.integers(0, 7, n)]
    codes[::5] = random_codes(rng, len(codes[::5]), bits)
    return codes


@pytest.mark.parametrize("bits", [8, 24, 32, 64, 72, 128, 192])
@pytest.mark.parametrize("path", KERNEL_PATHS)
@pytest.mark.parametrize("ids_order", ["shuffled", "increasing", "consecutive"])
def test_exact_search_equals_brute_force_with_ties(bits, path, ids_order, monkeypatch):
    use_kernel_path(path, monkeypatch)
    rng = np.random.default_rng(bits)
    codes = tied_codes(rng, 600, bits)
    # shuffled ids take the kernel's non-strict filter; consecutive ids are stored implicitly
    ids = {
        "shuffled": rng.permutation(10_000)[:600],
        "increasing": np.sort(rng.permutation(10_000)[:600]),
        "consecutive": np.arange(40, 640),
    }[ids_order].astype(np.int64)
    queries = random_codes(rng, 25, bits)
    index = HammingIndex(bits).add(codes, ids)
    assert (index._ids is None) == (ids_order == "consecutive")
    for k in (1, 9, 64, 600):
        got_ids, got_d = index.search(queries, k)
        ref_ids, ref_d = brute_topk(queries, codes, ids, k)
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_ids, ref_ids)


@pytest.mark.parametrize("bits", [32, 128])
@pytest.mark.parametrize("path", KERNEL_PATHS[:3])
def test_tiles_row_split_and_query_batches_equal_brute_force(bits, path, monkeypatch):
    """Enough rows for several L2 tiles and compactions; 1 query (rows split among threads),
    an odd count and more than a query batch (1024)."""
    use_kernel_path(path, monkeypatch)
    rng = np.random.default_rng(7)
    codes = tied_codes(rng, 60_000, bits)
    ids = rng.permutation(60_000).astype(np.int64) + 5
    for n, nq, k in ((60_000, 1, 50), (60_000, 13, 300), (2_000, 1030, 5)):
        index = HammingIndex(bits).add(codes[:n], ids[:n])
        queries = random_codes(rng, nq, bits)
        got_ids, got_d = index.search(queries, k)
        ref_ids, ref_d = brute_topk(queries, codes[:n], ids[:n], k)
        np.testing.assert_array_equal(got_d, ref_d)
        np.testing.assert_array_equal(got_ids, ref_ids)


def test_kernel_path_choice():
    paths = kernel.available_paths()
    assert "generic" in paths or paths == []  # [] only without a C compiler
    with pytest.raises(ValueError, match="kernel path must be one of"):
        kernel.resolve("sse9", 8)
    if paths:
        assert kernel.resolve("generic", 8) == "generic"
        assert kernel.resolve(None, 9) == "generic"  # SIMD paths cover 4, 8 and 16 bytes only
    for missing in {"avx2", "avx512"} - set(paths):
        with pytest.raises(ValueError, match=f"{missing}' is not supported by this CPU"):
            kernel.resolve(missing, 8)


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
    open(tmp_path / "future.idx", "wb").write(b"CHIDX009" + data[8:])
    with pytest.raises(ValueError, match="format '009'.*rebuild the index"):
        HammingIndex.load(str(tmp_path / "future.idx"))
    with pytest.raises(ValueError, match="is a directory"):
        HammingIndex.load(str(tmp_path))


def test_failed_save_leaves_the_existing_file_byte_identical(tmp_path, monkeypatch):
    from coophash_keras.index import storage

    rng = np.random.default_rng(8)
    path = tmp_path / "i.idx"
    HammingIndex(64, "v1").add(random_codes(rng, 50, 64), paths=[f"a/{i}.png" for i in range(50)]).save(str(path))
    before = path.read_bytes()

    def half_written(fh, groups):
        fh.write(b"\1" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_write_parts", half_written)
    with pytest.raises(OSError, match="disk full"):
        HammingIndex(64).add(random_codes(rng, 5, 64)).save(str(path))
    monkeypatch.undo()
    bad = HammingIndex(64)
    bad._ids = "not an array"
    with pytest.raises(ValueError, match="ids must be int32 or int64"):
        bad.save(str(path))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["i.idx"]  # no temporary file left behind


def test_compact_storage_and_id_widths(tmp_path):
    """K/8 bytes per code; consecutive ids cost nothing, others int32 if they fit, else int64."""
    rng = np.random.default_rng(9)
    codes = random_codes(rng, 1000, 64)
    for ids, width in [
        (None, 0),
        (np.arange(77, 1077), 0),
        (rng.permutation(1000) * 3, 4),
        (np.arange(1000) + 2**40, 0),
        (rng.permutation(1000).astype(np.int64) * 2**33, 8),
    ]:
        index = HammingIndex(64, "m").add(codes, ids)
        assert index.nbytes == 1000 * (8 + width)
        path = str(tmp_path / f"w{width}.idx")
        index.save(path)
        # within 64 bytes per part (header, version, codes, ids): <= 1.1x FAISS's K/8 bytes plus the ids
        assert os.path.getsize(path) <= 1.1 * 1000 * 8 + 1000 * width
        back = HammingIndex.load(path)
        np.testing.assert_array_equal(back.ids, index.ids)
        np.testing.assert_array_equal(back.packed_codes(), np.packbits(codes > 0, axis=1))
        q = random_codes(rng, 3, 64)
        for a, b in zip(back.search(q, 7), index.search(q, 7)):
            np.testing.assert_array_equal(a, b)
    index = HammingIndex(32).add(random_codes(rng, 10, 32))
    index.add(random_codes(rng, 5, 32))  # continuing ids stay implicit
    assert index._ids is None and index.ids.tolist() == list(range(15))
    index.remove([3])
    assert index._ids.dtype == np.int32 and 3 not in index and 4 in index


def flip_byte(path, offset):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_checksums_detect_corruption(tmp_path):
    rng = np.random.default_rng(10)
    n = 400
    index = HammingIndex(64, "model-x").add(
        random_codes(rng, n, 64), rng.permutation(n) + 10, [f"p{i}" for i in range(n)]
    )
    good = str(tmp_path / "good.idx")
    index.save(good)
    data = open(good, "rb").read()
    codes_at = 128  # header 64 + "model-x" padded to 64
    assert data[codes_at : codes_at + 8] == index.packed_codes()[0].tobytes()
    ids_at = codes_at + n * 8  # 3200: already a multiple of 64
    for name, offset, match in [
        ("code.idx", codes_at + 123, "its codes do not match their checksum"),
        ("version.idx", 64, "its codes do not match"),
        ("ids.idx", ids_at + 5, "its ids do not match"),
        ("paths.idx", len(data) - 3, "its paths do not match"),
        ("header.idx", 9, "its header does not match"),
        ("crc.idx", 53, "its header does not match"),  # a section checksum itself
    ]:
        path = str(tmp_path / name)
        open(path, "wb").write(data)
        flip_byte(path, offset)
        with pytest.raises(ValueError, match=f"{name} is corrupted: {match}"):
            HammingIndex.load(path)
    # verify=False skips the section checksums: the flipped code byte goes unnoticed
    loose = HammingIndex.load(str(tmp_path / "code.idx"), verify=False)
    assert not np.array_equal(loose.packed_codes(), index.packed_codes())
    assert open(good, "rb").read() == data  # loading never writes


def test_paths_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(11)
    codes = random_codes(rng, 30, 16)
    paths = [f"images/{i:03d}-é.png" for i in range(30)]
    index = HammingIndex(16).add(codes[:20], np.arange(100, 120), paths=paths[:20])
    index.add(codes[20:], np.arange(200, 210), paths=paths[20:])
    ids, _ = index.search(codes[:4], 3)
    got = index.paths_for(ids)
    assert got.shape == (4, 3)
    lookup = dict(zip(np.r_[np.arange(100, 120), np.arange(200, 210)].tolist(), paths))
    assert got.tolist() == [[lookup[i] for i in row] for row in ids.tolist()]
    assert index.paths_for([MISSING, 205]).tolist() == [None, paths[25]]
    with pytest.raises(KeyError, match="not in the index"):
        index.paths_for([100, 999])
    with pytest.raises(ValueError, match="stores a path per item"):
        index.add(codes[:1], [300])
    with pytest.raises(ValueError, match="1 codes need 1 paths"):
        index.add(codes[:1], [300], paths=["a", "b"])
    with pytest.raises(ValueError, match="paths must be strings"):
        index.add(codes[:1], [300], paths=[3])
    assert len(index) == 30
    index.remove([101, 203])
    assert index.paths_for([100, 102, 204]).tolist() == [paths[0], paths[2], paths[24]]
    path = str(tmp_path / "p.idx")
    index.save(path)
    for mmap in (True, False):
        back = HammingIndex.load(path, mmap=mmap)
        assert back.has_paths and back.paths_for(back.ids).tolist() == index.paths_for(index.ids).tolist()
    with pytest.raises(ValueError, match="stores no paths"):
        HammingIndex(16).add(codes).paths_for([0])
    with pytest.raises(ValueError, match="stores no paths"):
        HammingIndex(16).add(codes).add(codes[:1], paths=["x"])


def test_version_001_files_still_load(tmp_path):
    """A file written by the previous format (64-bit words, int64 ids, no checksum)."""
    import struct

    rng = np.random.default_rng(12)
    codes = random_codes(rng, 40, 72)
    packed = np.packbits(codes > 0, axis=1)
    words = np.zeros((40, 16), np.uint8)
    words[:, :9] = packed
    ids = np.arange(40, dtype=np.int64) * 5
    version = b"old-model"
    path = tmp_path / "v1.idx"
    path.write_bytes(
        struct.pack("<8sIIQI36x", b"CHIDX001", 72, 2, 40, len(version))
        + version.ljust(64, b"\0")
        + words.tobytes()
        + ids.tobytes()
    )
    back = HammingIndex.load(str(path), expected_model_version="old-model")
    np.testing.assert_array_equal(back.packed_codes(), packed)
    np.testing.assert_array_equal(back.ids, ids)
    ref_ids, ref_d = brute_topk(codes[:3], codes, ids, 5)
    got_ids, got_d = back.search(codes[:3], 5)
    np.testing.assert_array_equal(got_ids, ref_ids)
    back.save(str(tmp_path / "v2.idx"))  # re-saving upgrades it
    assert open(tmp_path / "v2.idx", "rb").read(8) == b"CHIDX002"


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


# ------------------------------------------------------------------------------- Milvus
@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    """One milvus-lite database (one embedded server) for the module: start-up takes ~1 s."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return str(tmp_path_factory.mktemp("milvus") / "codes.db")


def test_milvus_round_trip(milvus_uri):
    from coophash_keras.index import MilvusIndex, open_index

    rng = np.random.default_rng(13)
    codes = tied_codes(rng, 2000, 64)
    ids = rng.permutation(10**6)[:2000].astype(np.int64)
    exact = HammingIndex(64, "fp-1").add(codes, ids, paths=[f"db/{i}.jpg" for i in ids])
    remote = MilvusIndex.export(exact, milvus_uri, "round_trip")
    assert len(remote) == 2000 and remote.num_bits == 64 and remote.model_version == "fp-1" and remote.has_paths
    queries = np.concatenate([codes[:5], random_codes(rng, 15, 64)])
    true_d = hamming_distances(queries, codes)
    for k in (1, 10, 50):
        got_ids, got_d = remote.search(queries, k)
        ref_ids, ref_d = exact.search(queries, k)
        np.testing.assert_array_equal(got_d, ref_d)  # the same distances, in (distance, id) order
        # the same ids, except which of the codes tied at the k-th distance Milvus returns
        kth = ref_d[:, -1:]
        np.testing.assert_array_equal(np.where(ref_d < kth, got_ids, 0), np.where(ref_d < kth, ref_ids, 0))
        rows = np.vectorize({int(i): r for r, i in enumerate(ids)}.get)(got_ids)  # each id's row
        np.testing.assert_array_equal(np.take_along_axis(true_d, rows, 1), got_d)  # ...at its true distance
    assert remote.paths_for(got_ids[:2]).tolist() == exact.paths_for(got_ids[:2]).tolist()
    with pytest.raises(KeyError, match="not in the collection"):
        remote.paths_for([123456789])
    assert len(open_index(f"milvus:{milvus_uri}#round_trip")) == 2000
    with pytest.raises(ValueError, match="exists in Milvus.*overwrite"):
        MilvusIndex.export(exact, milvus_uri, "round_trip")
    smaller = HammingIndex(64, "fp-2").add(codes[:10])
    assert len(MilvusIndex.export(smaller, milvus_uri, "round_trip", overwrite=True)) == 10
    with pytest.raises(ValueError, match="no collection 'nope'"):
        MilvusIndex(milvus_uri, "nope")
    with pytest.raises(ValueError, match="k must be an integer in"):
        remote.search(queries, 20_000)


# ------------------------------------------------------------------------------- CLI
def cli(capsys, *argv):
    """`coophash ...` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from coophash_keras.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_index_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    rng = np.random.default_rng(14)
    good = str(tmp_path / "good.idx")
    HammingIndex(32, "m").add(random_codes(rng, 50, 32)).save(good)
    before = open(good, "rb").read()
    corrupt = str(tmp_path / "corrupt.idx")
    open(corrupt, "wb").write(before)
    flip_byte(corrupt, 64 + 10)
    target = f"milvus:{tmp_path / 'm.db'}#codes"
    for argv, match in [
        (["index", "export", "--index", str(tmp_path / "none.idx"), "--to", target], "no index file at"),
        (["index", "export", "--index", corrupt, "--to", target], "corrupt.idx is corrupted"),
        (["index", "export", "--index", good, "--to", "milvus:./x.db"], "milvus:URI#COLLECTION"),
        (["index", "export", "--index", good, "--to", "elastic:http://x#c"], "milvus:URI#COLLECTION"),
        (["index", "export", "--index", good, "--to", "milvus:./x.db#bad-name"], "collection name"),
        (
            ["index", "build", "--model", "m.keras", "--images", "a.png", "--split", "database", "--out", "n.idx"],
            "--images",
        ),
        (["index", "build", "--model", "m.keras", "--out", good], "exists; pass --overwrite"),
    ]:
        code, _, err = cli(capsys, *argv)
        assert code == 2 and match in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1, err
    assert open(good, "rb").read() == before


def test_index_cli_export_to_milvus(tmp_path, capsys, milvus_uri):
    rng = np.random.default_rng(15)
    path = str(tmp_path / "db.idx")
    HammingIndex(32, "m").add(random_codes(rng, 50, 32), paths=[f"{i}.png" for i in range(50)]).save(path)
    code, out, err = cli(capsys, "index", "export", "--index", path, "--to", f"milvus:{milvus_uri}#cli_export")
    assert code == 0 and "exported 50 codes" in out, err
    code, _, err = cli(capsys, "index", "export", "--index", path, "--to", f"milvus:{milvus_uri}#cli_export")
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
