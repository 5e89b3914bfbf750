"""Quick sanity row for #6: CoopHash vs the plain supervised baseline on digits, same split, base
network, epochs and batch. Prints mAP@all and wall time per method and seed.

    python benchmarks/compare_digits.py [--bits 32] [--epochs 20] [--seeds 0 1 2] [--labels-per-class N]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from coophash_keras import CoopHash, CoopHashConfig  # noqa: E402
from coophash_keras.baselines import SupervisedHashNet  # noqa: E402
from coophash_keras.data import load_digits, retrieval_split  # noqa: E402
from coophash_keras.metrics import retrieval_metrics  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bits", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="*", default=[0])
    p.add_argument("--labels-per-class", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CoopHashConfig override for both methods (JSON value), e.g. real_triplet_weight=1",
    )
    p.add_argument("--methods", nargs="*", default=["plain", "coophash"])
    p.add_argument("--json", default=None)
    a = p.parse_args()
    data = load_digits()
    rows = []
    for seed in a.seeds:
        split = retrieval_split(data.labels, 20, a.labels_per_class, seed=seed)
        train = data.subset(split.train)
        batch = min(64, len(train))
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
        cfg = CoopHashConfig(num_bits=a.bits, seed=seed, batch_size=batch, **overrides)
        for name, cls in (("plain", SupervisedHashNet), ("coophash", CoopHash)):
            if name not in a.methods:
                continue
            model = cls(cfg)
            model.compile()
            t = time.perf_counter()
            model.fit(train.as_dataset(batch, shuffle=True, seed=seed, drop_remainder=True), epochs=a.epochs, verbose=0)
            seconds = time.perf_counter() - t
            res = retrieval_metrics(
                model.encode(data.images[split.query]),
                data.labels[split.query],
                model.encode(data.images[split.database]),
                data.labels[split.database],
                pr_curve=False,
            )
            rows.append({"method": name, "seed": seed, "mAP@all": res["mAP@all"], "train_s": seconds})
            print(f"seed {seed} {name:>8s}: mAP@all {res['mAP@all']:.4f}  train {seconds:.1f}s", flush=True)
    for name in a.methods:
        m = [r["mAP@all"] for r in rows if r["method"] == name]
        print(f"{name:>8s}: mAP@all {np.mean(m):.4f} ± {np.std(m):.4f} over {len(m)} seed(s)")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
