"""Exact Hamming top-k: HammingIndex vs FAISS IndexBinaryFlat vs usearch vs Milvus (milvus-lite) vs
the machine's popcount-scan limit. Queries/s and bytes per code.

    python benchmarks/bench_index.py --out results/bench_index.jsonl                 # 1M, 10M x 32/64/128, 100M x 64
    python benchmarks/bench_index.py --sizes 100000 --bits 64 --big 0 --out /tmp/b.jsonl   # a quick check
    python benchmarks/bench_index.py --table results/bench_index.jsonl               # the table of docs/SEARCH.md

Each (size, bits) row is appended to --out (JSON lines) as soon as it is measured, and rows already
there are skipped: a long run that stops can be started again with the same command.

Per row (random codes generated in chunks, --queries random queries, top --k):
  ours      HammingIndex saved, then memory-mapped back (as served): queries/s, file bytes per
            code, build (add) and save time, load time with and without checksum verification;
  limit     xor + popcount of every (query, code) pair, no top-k work, same kernel path, blocking
            and memory: the rate the hardware allows; ours/limit says how close the search gets;
  faiss     IndexBinaryFlat (exact), same threads: queries/s, bytes per code (code_size);
  usearch   exact flat search of b1x8 vectors with the Hamming metric (usearch.index.search,
            exact=True) on --slow-queries queries, up to --usearch-max codes (it scans ~10x slower
            than ours); up to --hnsw-max codes also its HNSW index
            (approximate): build time, queries/s, recall@k, memory per code;
  milvus    milvus-lite (embedded Milvus 2.5, BIN_FLAT, HAMMING) up to --milvus-max codes, on
            --slow-queries queries: insert time, queries/s, bytes per code on disk.
ours, faiss and limit run interleaved, best of --repeats (a shared machine is noisy: the best run
is the least disturbed). Exact engines are checked to return the same distances as ours."""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from coophash_keras.index import HammingIndex, kernel


def random_codes(n, nbytes, seed, chunk=10_000_000):
    """uint8 [n, nbytes], generated in chunks (100M codes never need a second full-size buffer)."""
    out = np.empty((n, nbytes), np.uint8)
    for start in range(0, n, chunk):
        rng = np.random.default_rng([seed, start])
        out[start : start + chunk] = rng.integers(0, 256, (min(chunk, n - start), nbytes), dtype=np.uint8)
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def best_qps(fns, queries, repeats):
    """Interleaved best-of-`repeats` queries/s of each named function; returns ({name: qps}, {name: last out})."""
    best, outs = dict.fromkeys(fns, 0.0), {}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, outs[name] = timed(fn)
            best[name] = max(best[name], queries / seconds)
    return best, outs


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def measure(n, bits, a, workdir):
    import faiss

    nbytes = bits // 8
    codes = random_codes(n, nbytes, seed=bits)
    queries = random_codes(a.queries, nbytes, seed=10_000 + bits)
    row = {"n": n, "bits": bits, "queries": a.queries, "k": a.k, "threads": os.cpu_count()}

    # ours: build, save, load memory-mapped (with and without verification), search
    row["ours_build_s"], index = timed(lambda: HammingIndex(bits).add(codes))
    path = os.path.join(workdir, "bench.idx")
    row["ours_save_s"], _ = timed(lambda: index.save(path))
    index = None
    row["ours_load_noverify_s"], index = timed(lambda: HammingIndex.load(path, verify=False))
    row["ours_load_verify_s"], index = timed(lambda: HammingIndex.load(path))
    row["ours_verify_ms_per_1m"] = 1000 * (row["ours_load_verify_s"] - row["ours_load_noverify_s"]) / (n / 1e6)
    row["ours_bytes_per_code"] = os.path.getsize(path) / n
    row["ours_kernel_path"] = kernel.resolve(None, nbytes)
    index.search(queries[:8], a.k)  # compile / warm

    flat = faiss.IndexBinaryFlat(bits)
    row["faiss_build_s"], _ = timed(lambda: flat.add(codes))
    row["faiss_bytes_per_code"] = flat.code_size
    qps, outs = best_qps(
        {
            "ours": lambda: index.search(queries, a.k),
            "faiss": lambda: flat.search(queries, a.k),
            "limit": lambda: kernel.popcount_scan(index.packed_codes(), queries),
        },
        a.queries,
        a.repeats,
    )
    ours_d = outs["ours"][1]
    assert np.array_equal(np.sort(outs["faiss"][0], 1), ours_d), "FAISS and ours disagree"
    row.update(ours_qps=qps["ours"], faiss_flat_qps=qps["faiss"], scan_limit_qps=qps["limit"])
    row["ours_over_limit"] = qps["ours"] / qps["limit"]
    row["ours_over_faiss"] = qps["ours"] / qps["faiss"]
    flat = None

    if "usearch" in a.engines and n <= a.usearch_max:
        row.update(bench_usearch(codes, queries, ours_d, bits, a))
    if "milvus" in a.engines and n <= a.milvus_max:
        row.update(bench_milvus(index, queries, ours_d, a, workdir))
    os.remove(path)
    return row


def bench_usearch(codes, queries, ours_d, bits, a):
    from usearch.index import Index, MetricKind, ScalarKind, search

    out = {}
    q = queries[: a.slow_queries]
    threads = os.cpu_count()
    seconds, m = timed(lambda: search(codes, q, a.k, MetricKind.Hamming, exact=True, threads=threads))
    assert np.array_equal(m.distances.astype(np.int32), ours_d[: len(q)]), "usearch exact and ours disagree"
    out["usearch_exact_qps"] = len(q) / seconds
    out["usearch_exact_bytes_per_code"] = bits / 8  # searches the caller's array: no copy, no ids
    if len(codes) <= a.hnsw_max:
        hnsw = Index(ndim=bits, metric=MetricKind.Hamming, dtype=ScalarKind.B1)
        out["usearch_hnsw_build_s"], _ = timed(lambda: hnsw.add(np.arange(len(codes)), codes, threads=threads))
        seconds, r = timed(lambda: hnsw.search(q, a.k, threads=threads))
        out["usearch_hnsw_qps"] = len(q) / seconds
        kth = ours_d[: len(q), -1:]
        out["usearch_hnsw_recall"] = float(np.mean(r.distances.astype(np.int32) <= kth))  # within the true top-k
        out["usearch_hnsw_bytes_per_code"] = hnsw.memory_usage / len(codes)
    return out


def bench_milvus(index, queries, ours_d, a, workdir):
    from coophash_keras.index import MilvusIndex

    uri = os.path.join(workdir, "milvus.db")
    seconds, remote = timed(lambda: MilvusIndex.export(index, uri, "bench", overwrite=True))
    q = queries[: a.slow_queries]
    remote.search(q[:2], a.k)  # warm
    best = 0.0
    for _ in range(a.repeats):
        search_s, (_, d) = timed(lambda: remote.search(q, a.k))
        best = max(best, len(q) / search_s)
    assert np.array_equal(d, ours_d[: len(q)]), "Milvus and ours disagree"  # distances: ties may differ
    out = {"milvus_lite_insert_s": seconds, "milvus_lite_qps": best}
    out["milvus_lite_bytes_per_code"] = dir_size(uri) / len(index)
    remote._client.drop_collection("bench")
    remote.close()
    return out


def read_rows(path):
    """The measured rows of a results file (the first line is machine info)."""
    with open(path) as fh:
        return [row for row in map(json.loads, fh) if "n" in row]


def table(path):
    """The table of docs/SEARCH.md from a results file."""
    rows = read_rows(path)
    cols = "| codes | bits | ours q/s | FAISS flat q/s | usearch exact q/s | milvus-lite q/s | scan limit q/s | ours ÷ limit | ours ÷ FAISS | bytes/code ours / FAISS / milvus-lite |"
    print(cols)
    print("|---" * (cols.count("|") - 1) + "|")

    def f(row, key, fmt="{:,.0f}"):
        return fmt.format(row[key]) if key in row else "–"

    for r in sorted(rows, key=lambda r: (r["n"], r["bits"])):
        n = f"{r['n'] / 1e6:g}M"
        print(
            f"| {n} | {r['bits']} | {f(r, 'ours_qps')} | {f(r, 'faiss_flat_qps')} | {f(r, 'usearch_exact_qps', '{:,.1f}')} | "
            f"{f(r, 'milvus_lite_qps', '{:,.1f}')} | {f(r, 'scan_limit_qps')} | {f(r, 'ours_over_limit', '{:.2f}')} | "
            f"{f(r, 'ours_over_faiss', '{:.2f}')} | {f(r, 'ours_bytes_per_code', '{:.2f}')} / {f(r, 'faiss_bytes_per_code')} / "
            f"{f(r, 'milvus_lite_bytes_per_code', '{:.0f}')} |"
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    p.add_argument("--bits", type=int, nargs="*", default=[32, 64, 128])
    p.add_argument("--big", type=int, default=100_000_000, help="also this many 64-bit codes if memory allows (0: no)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--slow-queries", type=int, default=100, help="queries for usearch and Milvus")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--engines", nargs="*", default=["usearch", "milvus"], help="besides ours, FAISS and the limit")
    p.add_argument("--milvus-max", type=int, default=1_000_000, help="largest size sent to milvus-lite")
    p.add_argument("--usearch-max", type=int, default=10_000_000, help="largest size for usearch's exact search")
    p.add_argument("--hnsw-max", type=int, default=100_000, help="largest size for usearch's HNSW build")
    p.add_argument("--workdir", default=None, help="where index files go (default: a temporary directory)")
    p.add_argument("--out", default="results/bench_index.jsonl", help="JSON lines; rows already there are skipped")
    p.add_argument("--table", metavar="JSONL", help="print the table of docs/SEARCH.md from a results file and exit")
    a = p.parse_args()
    if a.table:
        return table(a.table)
    import faiss

    faiss.omp_set_num_threads(os.cpu_count())
    plan = [(n, b) for n in a.sizes for b in a.bits]
    if a.big:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        need = a.big * 8 * 3  # codes, FAISS's copy, the page cache of the file
        if need < free:
            plan.append((a.big, 64))
        else:
            print(
                f"skipping {a.big:,} x 64 bits: needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free", flush=True
            )
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    done = set()
    if os.path.exists(a.out):
        done = {(r["n"], r["bits"]) for r in read_rows(a.out)}
    else:
        info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
        info.update(faiss=faiss.__version__, kernel_paths=kernel.available_paths(), started=time.ctime())
        with open(a.out, "w") as fh:
            fh.write(json.dumps({"info": info}) + "\n")
    workdir = a.workdir or tempfile.mkdtemp(prefix="bench_index_")
    try:
        for n, bits in plan:
            if (n, bits) in done:
                print(f"n={n:,} bits={bits}: already in {a.out}, skipped", flush=True)
                continue
            row = measure(n, bits, a, workdir)
            with open(a.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(
                f"n={n:>11,} bits={bits:>3}: ours {row['ours_qps']:9.1f} q/s ({row['ours_kernel_path']}) | faiss flat "
                f"{row['faiss_flat_qps']:9.1f} | usearch exact {row.get('usearch_exact_qps', float('nan')):7.1f} | "
                f"milvus-lite {row.get('milvus_lite_qps', float('nan')):7.1f} | scan limit {row['scan_limit_qps']:9.1f} | "
                f"ours/limit {row['ours_over_limit']:.2f} ours/faiss {row['ours_over_faiss']:.2f} | bytes/code ours "
                f"{row['ours_bytes_per_code']:.2f} faiss {row['faiss_bytes_per_code']} | verify "
                f"{row['ours_verify_ms_per_1m']:.1f} ms per 1M codes",
                flush=True,
            )
    finally:
        if a.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
