"""Aggregate the run JSONs of benchmarks/fashion_protocol.py into tables (mean ± std over seeds) and
plots (PR curves, mAP vs labels), written as markdown + PNG. Needs matplotlib (benchmarks/requirements.txt).

    python benchmarks/make_results_doc.py results/fashion --out docs/results > docs/results/tables.md
"""

import argparse
import glob
import json
import os
from collections import defaultdict

import numpy as np

ORDER = [
    "plain",
    "dshgan",
    "coophash",
    "coophash+real",
    "coophash+real+unlabeled",
    "coophash+semi",
    "no_generator_pairs",
    "no_energy_head",
    "no_inference_head",
]


def load_runs(directory):
    runs = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as fh:
            r = json.load(fh)
        r["_file"] = os.path.basename(path)
        runs.append(r)
    return runs


def mean_std(values):
    v = np.asarray(values, float)
    return f"{v.mean():.4f} ± {v.std():.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def grouped(runs):
    groups = defaultdict(list)
    for r in runs:
        groups[(r["dataset"], r["labels_per_class"], r["bits"], r["method"])].append(r)
    return groups


def _method_key(m):
    return ORDER.index(m) if m in ORDER else len(ORDER)


def main_table(runs):
    g = grouped(runs)
    rows = [
        "| dataset | labels/class | bits | method | seeds | mAP@1000 | mAP@all | P@1000 | OOD mAP@1000 | "
        "train min/run (ms/step) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(g, key=lambda k: (k[0], k[1], k[2], _method_key(k[3]))):
        rs = g[key]
        rows.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {len(rs)} | "
            f"{mean_std([r['clean']['mAP@1000'] for r in rs])} | {mean_std([r['clean']['mAP@all'] for r in rs])} | "
            f"{mean_std([r['clean']['P@1000'] for r in rs])} | {mean_std([r['ood_mixed']['mAP@1000'] for r in rs])} | "
            f"{np.mean([r['train_s'] for r in rs]) / 60:.1f} ({np.mean([r['ms_per_step'] for r in rs]):.0f}) |"
        )
    return "\n".join(rows)


def corrupted_table(runs):
    g = grouped(runs)
    kinds = None
    rows = []
    for key in sorted(g, key=lambda k: (k[0], k[1], k[2], _method_key(k[3]))):
        rs = g[key]
        cq = rs[0]["corrupted_queries"]
        kinds = kinds or [k for k in cq if k != "clean"]
        cells = []
        for kind in kinds:
            base = mean_std([r["corrupted_queries"][kind]["mAP@1000"] for r in rs])
            if "recovered_mAP@1000" in cq[kind]:
                rec = mean_std([r["corrupted_queries"][kind]["recovered_mAP@1000"] for r in rs])
                cells.append(f"{base} → {rec}")
            else:
                cells.append(base)
        clean = mean_std([r["clean"]["mAP@1000"] for r in rs])
        if "clean" in cq:
            clean += " → " + mean_std([r["corrupted_queries"]["clean"]["recovered_mAP@1000"] for r in rs])
        rows.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {clean} | " + " | ".join(cells) + " |")
    if not rows:
        return ""
    head = [
        "| dataset | labels/class | bits | method | clean queries | " + " | ".join(kinds) + " |",
        "|---|---|---|---|---|" + "---|" * len(kinds),
    ]
    return "\n".join(head + rows)


def _save(fig, ax, out, name):
    import matplotlib.pyplot as plt

    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return name


def plots(runs, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    g = grouped(runs)
    written = []
    for dataset, labels, bits in sorted({k[:3] for k in g}):
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for method in sorted({k[3] for k in g if k[:3] == (dataset, labels, bits)}, key=_method_key):
            rs = g[(dataset, labels, bits, method)]
            p = np.mean([r["clean"]["pr_curve"]["precision"] for r in rs], axis=0)
            rc = np.mean([r["clean"]["pr_curve"]["recall"] for r in rs], axis=0)
            ax.plot(rc, p, marker=".", label=f"{method} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
        ax.set(
            xlabel="recall",
            ylabel="precision",
            title=f"{dataset}, {labels} labels/class, {bits} bits\n(PR over Hamming radius 0..K, mean of seeds)",
        )
        written.append(_save(fig, ax, out, f"pr_{dataset}_L{labels}_K{bits}.png"))
    for dataset, bits in sorted({(k[0], k[2]) for k in g}):
        label_counts = sorted({k[1] for k in g if (k[0], k[2]) == (dataset, bits)})
        if len(label_counts) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        for method in sorted({k[3] for k in g if (k[0], k[2]) == (dataset, bits)}, key=_method_key):
            xs, ms, ss = [], [], []
            for L in label_counts:
                rs = g.get((dataset, L, bits, method))
                if rs:
                    v = [r["clean"]["mAP@1000"] for r in rs]
                    xs.append(L), ms.append(np.mean(v)), ss.append(np.std(v))
            if len(xs) > 1:  # a method measured at one label count is not a curve
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=method)
        ax.set(
            xscale="log",
            xlabel="labeled images per class",
            ylabel="mAP@1000",
            title=f"{dataset}, {bits} bits (mean ± std over seeds)",
        )
        written.append(_save(fig, ax, out, f"map_vs_labels_{dataset}_K{bits}.png"))
    return written


def provenance(runs):
    rows = ["| run | wall time train + eval (s) | finished | machine | command |", "|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: r["_file"]):
        m = r["machine"]
        rows.append(
            f"| {r['_file'][:-5]} | {r['train_s']:.0f} + {r['eval_s']:.0f} | {r['finished']} | "
            f"{m['cores']} cores {m['cpu']}{', GPU' if m['gpu'] else ''}, TF {m['tensorflow']} | `{r['command']}` |"
        )
    total = sum(r["train_s"] + r["eval_s"] for r in runs)
    rows.append(f"\nTotal wall time of these {len(runs)} runs: {total / 3600:.2f} h.")
    return "\n".join(rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", help="directories of run JSONs")
    p.add_argument("--out", default="docs/results", help="where the PNG plots go")
    p.add_argument(
        "--insert",
        default=None,
        metavar="MD",
        help="replace the text between <!-- tables --> and <!-- /tables --> in this file",
    )
    a = p.parse_args()
    runs = [r for d in a.runs for r in load_runs(d)]
    if not runs:
        raise SystemExit(f"no run JSON found in {a.runs}")
    names = plots(runs, a.out)
    rel = os.path.relpath(a.out, os.path.dirname(a.insert) if a.insert else ".")
    text = "\n".join(
        [
            "### Retrieval (clean) and under the OOD shift\n",
            main_table(runs),
            "\n### Corrupted queries: mAP@1000 without → with `CoopHash.recover` (predicted class)\n",
            corrupted_table(runs),
            "\n### Plots\n",
            "\n".join(f"![{n}]({rel}/{n})" for n in names),
            "\n### Runs: command, machine, wall time\n",
            provenance(runs),
        ]
    )
    if a.insert:
        with open(a.insert) as fh:
            doc = fh.read()
        start, end = doc.index("<!-- tables -->") + len("<!-- tables -->"), doc.index("<!-- /tables -->")
        with open(a.insert, "w") as fh:
            fh.write(doc[:start] + "\n" + text + "\n" + doc[end:])
    else:
        print(text)


if __name__ == "__main__":
    main()
