"""Issue #6 protocol: CoopHash, its ablations, DSH-GAN and plain supervised hashing on Fashion-MNIST.

Split (per seed): 1,000 queries = 100 per class from the test split; database = the other 69,000
images; labeled training set = `labels-per-class` per class from the train split; the rest of the
train split is the unlabeled pool (DSH-GAN's adversary uses it). Every method gets the same base
network, batch, optimizer (Adam, config LRs) and number of optimizer steps.

Per run it writes <out>/<method>_L<labels>_K<bits>_s<seed>.json with: clean mAP@1000, mAP@all,
P@1000 and the Hamming-radius PR curve; OOD retrieval (every query and database image corrupted by
one random corruption, see coophash_keras/data/corruptions.py); corrupted queries against the clean
database per corruption, with and without `CoopHash.recover`; the command, machine and wall times.
`benchmarks/make_results_doc.py` turns the JSONs into docs/RESULTS.md and its plots.

    python benchmarks/fashion_protocol.py --methods plain coophash --labels-per-class 50 --bits 32 \
        --seeds 0 --steps 1500 --out results/fashion
    python benchmarks/fashion_protocol.py --dataset digits ...   # quick sanity row (20 queries/class)
"""

import argparse
import json
import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from coophash_keras import CoopHash, CoopHashConfig  # noqa: E402
from coophash_keras.baselines.dsh_gan import DSHGAN  # noqa: E402
from coophash_keras.baselines.triplet import TripletHashNet  # noqa: E402
from coophash_keras.data import load_digits, load_fashion_mnist, retrieval_split, with_unlabeled  # noqa: E402
from coophash_keras.data.corruptions import CORRUPTIONS, corrupt  # noqa: E402
from coophash_keras.metrics import retrieval_metrics  # noqa: E402

# method name -> (model class, config changes on top of the shared config)
METHODS = {
    "triplet": (TripletHashNet, lambda c: {}),
    "dshgan": (DSHGAN, lambda c: {}),
    "coophash": (CoopHash, lambda c: {}),
    "coophash+real": (CoopHash, lambda c: {"real_triplet_weight": 1.0}),  # ours: + real in-batch triplets
    # ours, not in the paper: + real triplets + marginal-energy likelihood on the unlabeled pool
    "coophash+real+unlabeled": (CoopHash, lambda c: {"real_triplet_weight": 1.0, "unlabeled_nll_weight": 1.0}),
    # ours: all of the above + classification of the revised pairs (what DSH-GAN does with its fakes)
    "coophash+semi": (
        CoopHash,
        lambda c: {"real_triplet_weight": 1.0, "unlabeled_nll_weight": 1.0, "synthetic_classification_weight": 1.0},
    ),
    "no_generator_pairs": (CoopHash, lambda c: c.with_ablation("no_generator_pairs").to_dict()),
    "no_energy_head": (CoopHash, lambda c: c.with_ablation("no_energy_head").to_dict()),
    "no_inference_head": (CoopHash, lambda c: c.with_ablation("no_inference_head").to_dict()),
}
RECOVERABLE = ("coophash", "coophash+real", "coophash+real+unlabeled", "coophash+semi")
SEMI_SUPERVISED = (
    "dshgan",
    "coophash+real+unlabeled",
    "coophash+semi",
)  # get batches of the unlabeled pool  # trained inference head + generator + energy


def machine():
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def load(name):
    if name == "digits":
        data = load_digits()
        return data, np.arange(len(data)), np.arange(len(data)), 20
    data = load_fashion_mnist(split="all")
    source = data.extras["source_split"]
    return data, np.flatnonzero(source == 1), np.flatnonzero(source == 0), 100  # 0 = train file, 1 = test


def metrics(model, query_images, query_labels, db_codes, db_labels, pr_curve=False):
    out = retrieval_metrics(
        model.encode(query_images), query_labels, db_codes, db_labels, topk=(1000,), pr_curve=pr_curve
    )
    keys = ["mAP@1000", "mAP@all", "P@1000"] + (["pr_curve"] if pr_curve else [])
    return {k: out[k] for k in keys}


def run_one(a, data, test_idx, train_idx, query_per_class, method, labels_per_class, bits, seed, shifted_cache):
    split = retrieval_split(
        data.labels,
        query_per_class,
        labels_per_class,
        database="rest",
        seed=seed,
        query_candidates=test_idx,
        train_candidates=train_idx,
    )
    train = data.subset(split.train)
    batch = min(a.batch, len(train))
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in a.set)}
    base = CoopHashConfig(
        image_shape=data.images.shape[1:], num_classes=10, num_bits=bits, seed=seed, batch_size=batch, **overrides
    )
    cls, changes = METHODS[method]
    cfg = base.replace(**changes(base))
    model = cls(cfg)
    model.compile()
    ds = train.as_dataset(batch, shuffle=True, seed=seed, drop_remainder=True, repeat=True)
    if method in SEMI_SUPERVISED:
        ds = with_unlabeled(ds, data.images[split.unlabeled], batch, seed)
    epochs = a.log_every and max(1, a.steps // a.log_every) or 1
    t0 = time.perf_counter()
    hist = model.fit(ds, epochs=epochs, steps_per_epoch=a.steps // epochs, verbose=0).history
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    q_img, q_lab = data.images[split.query], data.labels[split.query]
    db_img, db_lab = data.images[split.database], data.labels[split.database]
    db_codes = model.encode(db_img)
    result = {"clean": metrics(model, q_img, q_lab, db_codes, db_lab, pr_curve=True)}
    # OOD: queries and database both shifted by one random corruption per image
    if seed not in shifted_cache:
        shifted_cache.clear()
        shifted_cache[seed] = (
            corrupt(q_img, "mixed", seed=10_000 + seed),
            corrupt(db_img, "mixed", seed=20_000 + seed),
        )
    q_shift, db_shift = shifted_cache[seed]
    result["ood_mixed"] = metrics(model, q_shift, q_lab, model.encode(db_shift), db_lab)
    # corrupted queries vs the clean database, with and without recovery
    result["corrupted_queries"] = {}
    kinds = ("clean",) + CORRUPTIONS
    for kind in kinds:
        q = q_img if kind == "clean" else corrupt(q_img, kind, seed=30_000 + seed)
        row = {} if kind == "clean" else {"mAP@1000": metrics(model, q, q_lab, db_codes, db_lab)["mAP@1000"]}
        if method in RECOVERABLE:
            row["recovered_mAP@1000"] = metrics(model, model.recover(q), q_lab, db_codes, db_lab)["mAP@1000"]
        if row:
            result["corrupted_queries"][kind] = row
    eval_s = time.perf_counter() - t1
    return {
        "method": method,
        "dataset": a.dataset,
        "labels_per_class": labels_per_class,
        "bits": bits,
        "seed": seed,
        "steps": a.steps,
        "batch": batch,
        "train_images": len(train),
        "unlabeled_images": len(split.unlabeled),
        "queries": len(split.query),
        "database": len(split.database),
        "config": cfg.to_dict(),
        "train_s": train_s,
        "eval_s": eval_s,
        "ms_per_step": 1000 * train_s / a.steps,
        "final_train_logs": {k: float(v[-1]) for k, v in hist.items()},
        "command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **result,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["fashion_mnist", "digits"], default="fashion_mnist")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[50, 500])
    p.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per method (the same for all)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--log-every", type=int, default=250, help="steps per keras 'epoch' (logging only)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CoopHashConfig override for every method (JSON value)",
    )
    p.add_argument("--out", default="results/fashion")
    p.add_argument("--skip-existing", action="store_true", help="keep runs whose JSON already exists")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    data, test_idx, train_idx, query_per_class = load(a.dataset)
    shifted_cache = {}
    for seed in a.seeds:
        for labels_per_class in a.labels_per_class:
            for bits in a.bits:
                for method in a.methods:
                    path = os.path.join(a.out, f"{a.dataset}_{method}_L{labels_per_class}_K{bits}_s{seed}.json")
                    if a.skip_existing and os.path.exists(path):
                        continue
                    r = run_one(
                        a,
                        data,
                        test_idx,
                        train_idx,
                        query_per_class,
                        method,
                        labels_per_class,
                        bits,
                        seed,
                        shifted_cache,
                    )
                    with open(path + ".tmp", "w") as fh:
                        json.dump(r, fh, indent=1)
                    os.replace(path + ".tmp", path)
                    cq = r["corrupted_queries"]
                    rec = (
                        f"  recovered(noise) {cq['noise']['recovered_mAP@1000']:.4f} vs {cq['noise']['mAP@1000']:.4f}"
                        if "recovered_mAP@1000" in cq.get("noise", {})
                        else ""
                    )
                    print(
                        f"{a.dataset} L{labels_per_class} K{bits} s{seed} {method:>18s}: "
                        f"mAP@1000 {r['clean']['mAP@1000']:.4f} mAP@all {r['clean']['mAP@all']:.4f} "
                        f"OOD mAP@1000 {r['ood_mixed']['mAP@1000']:.4f}{rec}  "
                        f"train {r['train_s']:.0f}s ({r['ms_per_step']:.0f} ms/step) eval {r['eval_s']:.0f}s",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
