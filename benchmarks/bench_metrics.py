"""Time retrieval_metrics on 1,000 queries x 70,000 database codes (random codes, 10 classes).

python benchmarks/bench_metrics.py [--queries 1000] [--database 70000] [--bits 32 64]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from coophash_keras.metrics import retrieval_metrics  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--database", type=int, default=70000)
    p.add_argument("--bits", type=int, nargs="*", default=[32, 64])
    a = p.parse_args()
    rng = np.random.default_rng(0)
    for bits in a.bits:
        q = np.where(rng.random((a.queries, bits)) > 0.5, 1, -1).astype(np.int8)
        db = np.where(rng.random((a.database, bits)) > 0.5, 1, -1).astype(np.int8)
        ql, dl = rng.integers(0, 10, a.queries), rng.integers(0, 10, a.database)
        t = time.perf_counter()
        retrieval_metrics(q, ql, db, dl, topk=(1000,))
        print(f"{a.queries} queries x {a.database} codes, {bits} bits: all metrics in {time.perf_counter() - t:.2f}s")


if __name__ == "__main__":
    main()
