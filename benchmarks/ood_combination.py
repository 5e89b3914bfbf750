"""Would a combination of CoopHash's two OOD scores beat each alone? (docs/OOD.md, issue 39)

For each run: the energy head log sum_c exp f_E(x, c) and the free energy of the class logits,
each standardised by its mean and standard deviation on the run's *training* images (never the
queries nor an OOD set), and `min_z` = the smaller of the two z-scores: an image is as in
distribution as its least convinced score says. AUROC of each on bench_ood.py's OOD sets (the same
images, seeds and in-distribution queries). An offline study: nothing here is served.

    python benchmarks/ood_combination.py --runs runs/ood/digits_coophash_s0 --out results/ood/combination
    python benchmarks/ood_combination.py --runs runs/ood/digits8_coophash_s0 --held-out digits:8,9 ...
"""

import argparse
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from bench_ood import model_scores, ood_sets, parse_classes  # noqa: E402

from coophash_keras.data import RetrievalSplit  # noqa: E402
from coophash_keras.evaluation import load_run, load_run_data  # noqa: E402
from coophash_keras.io import atomic_write_json, load_model  # noqa: E402
from coophash_keras.metrics.ood import auroc  # noqa: E402


def head_and_free_energy(model, images):
    """{energy_head, free_energy}: float64 [N] each, for uint8 images."""
    scores = model_scores(model, images)
    # the served energy is the head for these runs (served_energy 'energy_head'); else its own key
    head = scores.get("energy_head", scores["energy"])
    # a multi-label model's free energy is JointEnergy (models/networks.py energy_score), as served
    return {"energy_head": head, "free_energy": scores.get("joint_energy", scores["free_energy"])}


def combine(scores, stats):
    """Adds `min_z`: min over the two scores of (score - mean) / std with the training statistics."""
    z = [(scores[k] - stats[k][0]) / stats[k][1] for k in ("energy_head", "free_energy")]
    return {**scores, "min_z": np.minimum(*z)}


def study(run_dir, held_out, seed=0):
    """The record of one run: AUROC of each score on every OOD set."""
    run = load_run(run_dir)
    data = load_run_data(run)
    split = RetrievalSplit.load(os.path.join(run_dir, "split.npz"))
    model = load_model(os.path.join(run_dir, "model.keras"))
    if not hasattr(model.hash_network, "served_energy"):  # the energy head is CoopHash's alone
        raise SystemExit(f"{run_dir}: expected a CoopHash run (a model with an energy head)")
    train = head_and_free_energy(model, data.images[split.train])
    stats = {k: (float(np.mean(v)), float(np.std(v))) for k, v in train.items()}
    queries = data.images[split.query]
    in_scores = combine(head_and_free_energy(model, queries), stats)
    record = {"run_dir": run_dir, "method": run.get("method") or run.get("model"), "seed": run.get("seed")}
    record.update(train_images=int(len(split.train)), train_stats=stats, sets={})
    for name, (group, images) in ood_sets(queries, tuple(queries.shape[1:]), run["dataset"], held_out, seed).items():
        out = combine(head_and_free_energy(model, images), stats)
        record["sets"][name] = {"group": group, **{k: auroc(in_scores[k], out[k]) for k in in_scores}}
    return record


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out", default="results/ood/combination")
    p.add_argument("--held-out", default=None, help="DATASET:C1,C2: classes the runs were not trained on")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    held_out = parse_classes(a.held_out) if a.held_out else None
    for run_dir in a.runs:
        record = study(run_dir, held_out)
        record["command"] = " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv])
        path = os.path.join(a.out, os.path.basename(os.path.normpath(run_dir)) + ".json")
        atomic_write_json(path, record)
        line = ", ".join(
            f"{s} {v['energy_head']:.3f}/{v['free_energy']:.3f}/{v['min_z']:.3f}" for s, v in record["sets"].items()
        )
        print(f"{run_dir}: AUROC head/free energy/min_z: {line}")


if __name__ == "__main__":
    main()
