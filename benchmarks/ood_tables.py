"""The OOD detection section of docs/RESULTS.md from benchmarks/bench_ood.py's JSONs: tables between
`<!-- ood-tables -->` and `<!-- /ood-tables -->`, and a histogram PNG per data set (matplotlib).
Sorted, no time stamps: the same JSONs give the same bytes.

    python benchmarks/ood_tables.py                  # results/ood -> docs/RESULTS.md, docs/results/ood_*.png
    python benchmarks/ood_tables.py --stdout
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from doc_sections import insert  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OOD_DIR = os.path.join(REPO, "results", "ood")
BEGIN, END = "<!-- ood-tables -->", "<!-- /ood-tables -->"
GROUPS = ("far", "near", "shifted")
SCORE_NAMES = {
    "energy": "served `energy`",
    "energy_head": "energy head log Σ exp f_E",
    "free_energy": "free energy of class logits",
    "msp": "max softmax",
    "joint_energy": "joint energy Σ softplus(class logits)",
    "max_sigmoid": "max sigmoid",
}
HIST_SETS = ("other_dataset", "uniform_noise", "upside_down", "held_out_classes", "single_items")


def load(directory=OOD_DIR):
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as fh:
            record = json.load(fh)
        record["file"] = os.path.basename(path)
        runs.append(record)
    return runs


def _key(r):
    """Rows group runs by data set (an npz file by its name: a class subset written by
    bench_ood.py --write-subset) and method."""
    kind, _, path = r["dataset"].partition(":")
    data = os.path.splitext(os.path.basename(path))[0] if kind == "npz" else kind
    if "held_out_classes" in r["sets"]:
        data += " (other classes held out)"
    return data, r["method"]


def _cell(values, digits=3):
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def auroc_tables(runs, metric="auroc"):
    """One table per data set: a row per (method, score), a column per OOD set (grouped far, near,
    shifted), mean ± std over seeds."""
    out = []
    by_data = {}
    for r in runs:
        by_data.setdefault(_key(r)[0], []).append(r)
    for data, rs in sorted(by_data.items()):
        sets = {}
        for r in rs:
            for name, entry in r["sets"].items():
                sets.setdefault(name, entry["group"])
        columns = [n for g in GROUPS for n in sorted(s for s, grp in sets.items() if grp == g)]
        rows = []
        groups = {}
        for r in rs:
            groups.setdefault(_key(r)[1], []).append(r)
        for method, mrs in sorted(groups.items()):
            for score in mrs[0]["scores"]:
                cells = [
                    _cell([m["sets"][c][score][metric] for m in mrs if c in m["sets"] and score in m["sets"][c]])
                    for c in columns
                ]
                seeds = ",".join(str(m["seed"]) for m in sorted(mrs, key=lambda m: m["seed"] or 0))
                rows.append([f"`{method}`", SCORE_NAMES.get(score, score), seeds, *cells])
        header = ["method", "score", "seeds", *[f"{c} ({sets[c]})" for c in columns]]
        out.append(f"#### {data}\n\n" + _table(header, rows))
    return "\n\n".join(out)


def decision_table(runs):
    """The served decision (`in_distribution` at 95% TPR, threshold from one half of the queries):
    the TPR it keeps on the other half, and the share of each noise set it flags."""
    rows = []
    for r in sorted(runs, key=lambda r: (_key(r), r["seed"] or 0)):
        d = r["decision"].get("energy")
        if d is None:
            continue
        flagged = [f"{100 * r['sets'][s]['energy']['flagged']:.1f}%" for s in ("uniform_noise", "gaussian_noise")]
        rows.append(
            [
                _key(r)[0],
                f"`{_key(r)[1]}`",
                str(r["seed"]),
                f"{100 * d['tpr_held_out']:.1f}% ({d['test_images']} images)",
                *flagged,
            ]
        )
    header = ["data", "method", "seed", "TPR kept (asked 95%)", "uniform noise flagged", "Gaussian noise flagged"]
    return _table(header, rows)


def coophash_vs_best_table(runs):
    """Per data set and OOD set: CoopHash's served score against the best other model's served
    score (AUROC), seed by seed."""
    rows = []
    by = {}
    for r in runs:
        by.setdefault((_key(r)[0], r["seed"]), []).append(r)
    for (data, seed), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        ours = sorted((r for r in rs if r["model"] == "coophash"), key=lambda r: r["method"])
        others = [r for r in rs if r["model"] != "coophash"]
        if not ours or not others:
            continue
        for mine in ours:
            for name in mine["sets"]:
                best = max(others, key=lambda r: r["sets"].get(name, {}).get("energy", {}).get("auroc", -1))
                if name not in best["sets"]:
                    continue
                a, b = mine["sets"][name]["energy"]["auroc"], best["sets"][name]["energy"]["auroc"]
                row = [data, str(seed), f"`{mine['method']}`", name, f"{a:.3f}", f"{b:.3f} (`{best['method']}`)"]
                rows.append(row + [f"{a - b:+.3f}"])
    header = ["data", "seed", "CoopHash method", "OOD set", "its served `energy`", "best other served score"]
    return _table(header + ["change"], rows)


def runs_list(runs):
    rows = []
    for r in sorted(runs, key=lambda r: r["file"]):
        alone = r.get("alone", {}).get("alone")
        rows.append([f"`results/ood/{r['file']}`", f"`{r['run_dir']}`", r["machine"]["cpu"], str(alone), r["command"]])
    return _table(["JSON", "run", "machine", "alone", "command"], rows)


def document(runs, image_dir="results"):
    if not runs:
        return "No OOD run yet (benchmarks/bench_ood.py)."
    plots = "\n".join(f"![{n}]({image_dir}/{n})" for n in plot_names(runs))
    return "\n\n".join(
        [
            "<!-- generated by benchmarks/ood_tables.py from results/ood; edit the prose outside the markers -->",
            "#### AUROC (in distribution = the run's queries; higher = the score tells them apart better)",
            auroc_tables(runs),
            "#### FPR at 95% TPR (lower is better)",
            auroc_tables(runs, "fpr@95tpr"),
            "#### The served decision: `in_distribution` at an asked TPR of 95%",
            decision_table(runs),
            "#### CoopHash's served score against the best other model's, per seed",
            coophash_vs_best_table(runs),
            "#### Histograms of the served `energy` (one panel per model, seed 0)",
            plots,
            "#### Runs",
            runs_list(runs),
        ]
    )


def plot_names(runs):
    return [f"ood_hist_{d.split(' ')[0]}.png" for d in _datasets(runs)]


def _datasets(runs):
    return sorted({_key(r)[0] for r in runs})


def render(runs, out):
    """A histogram per model (served `energy`, the first seed): the queries against the OOD sets,
    densities rebuilt from the stored percentiles (bins of equal mass: 5% of the images each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    for data, name in zip(_datasets(runs), plot_names(runs)):
        rs = [r for r in runs if _key(r)[0] == data]
        first = {}
        for r in sorted(rs, key=lambda r: r["seed"] or 0):
            first.setdefault(r["method"], r)
        fig, axes = plt.subplots(1, len(first), figsize=(4 * len(first), 3.2), squeeze=False)
        for ax, (method, r) in zip(axes[0], sorted(first.items())):
            curves = [("queries (in distribution)", r["in_distribution"]["energy"])]
            curves += [(s, r["sets"][s]["energy"]["percentiles"]) for s in HIST_SETS if s in r["sets"]]
            for label, q in curves:
                q = np.asarray(q)[::5]  # 5% of the images between consecutive edges
                widths = np.maximum(np.diff(q), 1e-9)
                ax.stairs(0.05 / widths, q, label=label, fill=label.startswith("queries"), alpha=0.6)
            ax.set_title(f"{method} (seed {r['seed']})", fontsize=9)
            ax.set_xlabel("served energy (higher = more like the data)", fontsize=8)
        axes[0][0].set_ylabel("density", fontsize=8)
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{data}: served energy, queries vs OOD sets", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=90, metadata={"Software": None})
        plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=OOD_DIR)
    p.add_argument("--doc", default=os.path.join(REPO, "docs", "RESULTS.md"))
    p.add_argument("--out", default=os.path.join(REPO, "docs", "results"))
    p.add_argument("--stdout", action="store_true")
    a = p.parse_args(argv)
    runs = load(a.dir)
    text = document(runs)
    if a.stdout:
        print(text)
        return
    if runs:
        render(runs, a.out)
    if not insert(a.doc, text, BEGIN, END):
        raise SystemExit(f"{a.doc} has no single {BEGIN} ... {END} pair")
    print(f"updated the OOD section of {a.doc} ({len(runs)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
