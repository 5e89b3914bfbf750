"""The OOD detection benchmark: is this image like the training data? Every score a trained run's
model has, against far, near and shifted out-of-distribution sets; one JSON per run.

In distribution: the run's own queries (never trained on). Scores (higher = more like the data):
  energy        the served `energy` output: CoopHash's energy head log sum_c exp f_E(x, c) or, with
                served_energy 'class_free_energy', its free energy; DSH-GAN's adversary logit; the
                pointwise baselines' free energy of their class logits (a multi-label model's free
                energy is its joint_energy, below: models/networks.py energy_score)
  energy_head   CoopHash's energy head, when it is not the served score
  free_energy   log sum_c exp(class logit) of the model's class read-out (Liu et al. 2020); for a
                multi-label run the softmax form, kept beside the served joint_energy
  msp           the largest softmax probability of the class read-out (Hendrycks & Gimpel 2017)
A multi-label run (config.multi_label: independent sigmoid class logits, e.g. fashion_mosaics) has
no msp (a softmax over independent sigmoids means nothing); beside free_energy it has
  joint_energy  sum_c softplus(class logit) = sum_c log(1 + exp logit_c), JointEnergy (Wang et al.,
                NeurIPS 2021), the multi-label analogue of the free energy
  max_sigmoid   the largest sigmoid probability of the class read-out
(a score that is constant on the queries, e.g. a label-free model's class read-out, is left out).
OOD sets, each as many images as there are queries (fewer when the source is smaller):
  far       other_dataset (digits <-> Fashion-MNIST, and digits for fashion_mosaics; resized
            bilinearly to the model's shape), uniform_noise (U{0..255}), gaussian_noise
            (N(128, 64^2) grey levels, clipped)
  near      upside_down and rotate90 queries; held_out_classes (--held-out DATASET:C1,C2, for a run
            trained on the other classes, e.g. an npz written by --write-subset); for
            fashion_mosaics single_items (one Fashion-MNIST test-file item enlarged to fill the
            56x56 frame: the classes of the data, not its 2x2 layout)
  shifted   the queries under each of coophash_keras.data.corruptions (noise, blur, contrast,
            rotation, occlusion: moderate damage a person still sees through)
Metrics (coophash_keras.metrics.ood): AUROC and FPR at 95% TPR. And the served decision: the
threshold that keeps 95% of one half of the queries, measured on the other half (the TPR kept,
and its spread over 200 random halvings) and on every OOD set (the share flagged as OOD). Each score's 0..100th percentiles per set are kept for
the histogram plot (benchmarks/ood_tables.py).

    python benchmarks/bench_ood.py --runs runs/demo --out results/ood
    python benchmarks/bench_ood.py --write-subset digits:0,1,2,3,4,5,6,7 data/digits_0-7.npz
    python benchmarks/bench_ood.py --runs runs/d8 --held-out digits:8,9 --out results/ood
"""

import argparse
import json
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from alone import AloneProbe, cpu_name  # noqa: E402
from scipy.special import expit  # noqa: E402

from coophash_keras.data import RetrievalSplit, load_dataset  # noqa: E402
from coophash_keras.data.corruptions import CORRUPTIONS, corrupt  # noqa: E402
from coophash_keras.evaluation import load_run, load_run_data  # noqa: E402
from coophash_keras.io import atomic_write_json, load_model  # noqa: E402
from coophash_keras.metrics.ood import auroc, fpr_at_tpr, threshold_at_tpr  # noqa: E402

OTHER_DATASET = {"digits": "fashion_mnist", "fashion_mnist": "digits", "fashion_mosaics": "digits"}
TPR = 0.95
SPLITS = 200  # random halvings for the held-out TPR's spread (split_spread)


CLASS_SCORES = {False: ("free_energy", "msp"), True: ("free_energy", "joint_energy", "max_sigmoid")}


def class_logit_scores(logits, multi_label=False):
    """{score name: float64 [N]} of class logits [N, C] (see the module docstring): the free energy,
    and the max softmax (single-label) or JointEnergy and the max sigmoid (multi-label: the logits
    are independent sigmoids, so a softmax over them means nothing)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    if not multi_label:
        return {"free_energy": lse, "msp": np.exp(top[:, 0] - lse)}
    return {
        "free_energy": lse,
        "joint_energy": np.logaddexp(0.0, logits).sum(axis=1),  # sum_c softplus, without overflow
        "max_sigmoid": expit(top[:, 0]),  # the sigmoid is monotone: the largest logit's
    }


def model_scores(model, images, batch=512):
    """{score name: float64 [N]} for uint8 images (see the module docstring)."""
    import tensorflow as tf

    from coophash_keras.preprocessing import normalize_images

    multi_label = bool(getattr(model.config, "multi_label", False))
    parts = {k: [] for k in ("energy", *CLASS_SCORES[multi_label])}
    if getattr(model.hash_network, "served_energy", "energy_head") != "energy_head":
        parts["energy_head"] = []  # CoopHash serving another score: its energy head beside it
    for i in range(0, len(images), batch):
        out = model.hash_network.serving_outputs(normalize_images(tf.constant(images[i : i + batch])))
        parts["energy"].append(np.asarray(out["energy"], np.float64))
        if "energy_head" in parts:
            parts["energy_head"].append(np.asarray(out["energy_head"], np.float64))
        for k, v in class_logit_scores(out["class_logits"], multi_label).items():
            parts[k].append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def resize(images, shape):
    """uint8 [N, h, w, c] -> uint8 [N, H, W, C] (bilinear; grey <-> RGB by averaging / repeating)."""
    import tensorflow as tf

    h, w, c = shape
    x = tf.image.resize(tf.cast(images, tf.float32), [h, w]).numpy()
    if x.shape[-1] != c:
        x = np.repeat(x.mean(axis=-1, keepdims=True), c, axis=-1)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def ood_sets(queries, shape, dataset, held_out, seed):
    """{name: (group, uint8 images)}."""
    rng = np.random.default_rng(10_000 + seed)
    n = len(queries)
    sets = {}
    other = OTHER_DATASET.get(dataset)
    if other:
        source = load_dataset(other).images
        sets["other_dataset"] = (
            "far",
            resize(source[rng.choice(len(source), min(n, len(source)), replace=False)], shape),
        )
    sets["uniform_noise"] = ("far", rng.integers(0, 256, (n, *shape), dtype=np.uint8))
    gauss = rng.normal(128.0, 64.0, (n, *shape))
    sets["gaussian_noise"] = ("far", np.clip(np.round(gauss), 0, 255).astype(np.uint8))
    sets["upside_down"] = ("near", queries[:, ::-1].copy())
    if shape[0] == shape[1]:
        sets["rotate90"] = ("near", np.rot90(queries, 1, axes=(1, 2)).copy())
    if dataset == "fashion_mosaics":  # one item filling the frame: the right clothes, not a mosaic
        items = load_dataset("fashion_mnist")
        test_file = np.flatnonzero(items.extras["source_split"] == 1)
        idx = rng.choice(test_file, min(n, len(test_file)), replace=False)
        sets["single_items"] = ("near", resize(items.images[idx], shape))
    if held_out:
        name, classes = held_out
        data = load_dataset(name)
        idx = np.flatnonzero(np.isin(data.labels, classes))
        idx = rng.choice(idx, min(n, len(idx)), replace=False)
        sets["held_out_classes"] = ("near", resize(data.images[idx], shape))
    for kind in CORRUPTIONS:
        sets[kind] = ("shifted", corrupt(queries, kind, seed=20_000 + seed))
    return sets


def split_spread(scores, splits):
    """How far one split's held-out TPR strays: over `splits` random halvings of the queries, the
    TPR kept on one half by the threshold set on the other -> median, 5th and 95th percentiles,
    and the share within 3 points of the asked TPR. (With 500 images a half, one split's TPR
    alone has a standard deviation of about 1.4 points.)"""
    kept = []
    for s in range(splits):
        order = np.random.default_rng(40_000 + s).permutation(len(scores))
        calib, held = order[: len(order) // 2], order[len(order) // 2 :]
        kept.append(np.mean(scores[held] >= threshold_at_tpr(scores[calib], TPR)))
    kept = np.array(kept)
    return {
        "splits": splits,
        "median": float(np.median(kept)),
        "p5": float(np.percentile(kept, 5)),
        "p95": float(np.percentile(kept, 95)),
        "within_3_points": float(np.mean(np.abs(kept - TPR) <= 0.03 + 1e-9)),
    }


def percentiles(values):
    return [round(float(v), 5) for v in np.percentile(values, np.arange(101))]


def evaluate(run_dir, held_out=None, seed=0):
    """The JSON record of one run (without the machine and command)."""
    run = load_run(run_dir)
    data = load_run_data(run)
    split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
    model = load_model(os.path.join(run_dir, "model.keras"))
    queries = data.images[split.query]
    shape = tuple(queries.shape[1:])
    in_scores = model_scores(model, queries)
    # a score constant on the queries says nothing (a label-free model's zero class logits)
    names = [k for k, v in in_scores.items() if np.ptp(v) > 1e-6 * max(1.0, np.abs(v).max())]
    halves = np.random.default_rng(30_000 + seed).permutation(len(queries))
    calib, held = halves[: len(halves) // 2], halves[len(halves) // 2 :]
    record = {
        "run_dir": run_dir,
        "dataset": run["dataset"],
        "model": run.get("model"),
        "method": run.get("method") or run.get("model"),
        "seed": run.get("seed"),
        "bits": int(model.hash_network.num_bits),
        "queries": int(len(queries)),
        "scores": names,
        "in_distribution": {k: percentiles(in_scores[k]) for k in names},
        "decision": {},
        "sets": {},
    }
    thresholds = {k: threshold_at_tpr(in_scores[k][calib], TPR) for k in names}
    for k in names:
        record["decision"][k] = {
            "tpr_asked": TPR,
            "threshold": thresholds[k],
            "tpr_held_out": float(np.mean(in_scores[k][held] >= thresholds[k])),
            "calibration_images": int(len(calib)),
            "test_images": int(len(held)),
            "tpr_held_out_over_splits": split_spread(in_scores[k], SPLITS),
        }
    for set_name, (group, images) in ood_sets(queries, shape, run["dataset"], held_out, seed).items():
        out_scores = model_scores(model, images)
        entry = {"group": group, "images": int(len(images))}
        for k in names:
            entry[k] = {
                "auroc": auroc(in_scores[k], out_scores[k]),
                "fpr@95tpr": fpr_at_tpr(in_scores[k], out_scores[k], TPR),
                "flagged": float(np.mean(out_scores[k] < thresholds[k])),  # by the half-calibrated threshold
                "percentiles": percentiles(out_scores[k]),
            }
        record["sets"][set_name] = entry
    return record


def write_subset(spec, path):
    """--write-subset DATASET:C1,C2,... PATH: an npz of the dataset's images of those classes, labels
    renumbered 0.. in the order given (for `coophash train --dataset npz:PATH`)."""
    name, classes = parse_classes(spec)
    data = load_dataset(name)
    keep = np.flatnonzero(np.isin(data.labels, classes))
    relabel = {c: i for i, c in enumerate(classes)}
    labels = np.array([relabel[int(c)] for c in data.labels[keep]], np.int64)
    np.savez_compressed(path, images=data.images[keep], labels=labels)
    print(f"wrote {len(keep)} images of classes {classes} of {name} to {path}")


def parse_classes(spec):
    name, _, classes = spec.partition(":")
    if not classes:
        raise SystemExit(f"expected DATASET:C1,C2,..., got {spec!r}")
    return name, [int(c) for c in classes.split(",")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", default=[], help="run directories (coophash train --run-dir)")
    p.add_argument("--out", default="results/ood", help="directory of the JSONs (one per run)")
    p.add_argument("--held-out", default=None, help="DATASET:C1,C2: classes the runs were not trained on")
    p.add_argument("--tag", default="", help="added to each JSON's name")
    p.add_argument("--seed", type=int, default=0, help="seed of the OOD images drawn")
    p.add_argument("--write-subset", nargs=2, metavar=("DATASET:CLASSES", "PATH"), help="write a class subset npz")
    a = p.parse_args(argv)
    if a.write_subset:
        return write_subset(*a.write_subset)
    os.makedirs(a.out, exist_ok=True)
    held_out = parse_classes(a.held_out) if a.held_out else None
    for run_dir in a.runs:
        probe, start = AloneProbe(), time.time()
        record = evaluate(run_dir, held_out, a.seed)
        record.update(
            machine={"cpu": cpu_name(), "cores": os.cpu_count()},
            alone=probe.result(),
            seconds=round(time.time() - start, 1),
            command=" ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]),
        )
        name = os.path.basename(os.path.normpath(run_dir)) + (f"_{a.tag}" if a.tag else "")
        path = os.path.join(a.out, f"{name}.json")
        atomic_write_json(path, record)
        served = record["scores"][0]
        summary = ", ".join(f"{s} {v[served]['auroc']:.3f}" for s, v in record["sets"].items())
        print(f"{run_dir} ({record['method']}): AUROC of `{served}`: {summary} -> {path}")
        print(json.dumps({k: round(v["tpr_held_out"], 3) for k, v in record["decision"].items()}))


if __name__ == "__main__":
    main()
