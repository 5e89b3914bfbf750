"""The PNG plots of docs/RESULTS.md (matplotlib, Agg). plot_specs decides which plots the runs
support without importing matplotlib, so the doc links the same files with or without it."""

import os

import numpy as np
import results_tables as T


def plot_specs(runs, dataset, labels, bits):
    """[(kind, file name, cell)]: PR curves at the bar's cells, mAP@1000 vs labels per (dataset,
    bits) with two or more label counts, and mAP@1000 during training where runs have a map_curve."""
    g = T.groups(runs)
    specs = [
        ("pr", f"pr_{dataset}_L{lpc}_K{bits}.png", (dataset, lpc, bits))
        for lpc in labels
        if _compared(g, (dataset, lpc, bits))
    ]
    for ds, b in sorted({(c[0], c[2]) for c in T.cells(g)}):
        lpcs = {c[1] for c in T.cells(g) if (c[0], c[2]) == (ds, b) and c[1] and _compared(g, c)}
        if len(lpcs) > 1 and not T.multi_label([r for r in runs if r["dataset"] == ds]):
            specs.append(("labels", f"map_vs_labels_{ds}_K{b}.png", (ds, b)))
    for cell in sorted({k[:3] for k in curve_groups(runs)}):
        specs.append(("curve", f"curve_{cell[0]}_L{cell[1]}_K{cell[2]}.png", cell))
    return specs


def curve_groups(runs):
    """{(dataset, labels_per_class, bits, method, tag): runs with a map_curve}, from the untagged,
    the equal-time and the long runs (each of the latter two is a longer curve of the same method)."""
    out = {}
    for tag in ("", T.EQUAL_TIME, T.LONG):
        for key, rs in T.groups(runs, tag).items():
            if with_curve := [r for r in rs if r.get("map_curve")]:
                out[(*key, tag)] = with_curve
    return out


def _configuration(runs):
    """True for a CoopHash configuration, False for an ablation or a switch of one: those have their
    own tables against their configuration, and a plot of every one of them hides the comparison."""
    return T.is_coophash(runs[0]["method"]) and not any(T.ablation_parent(r) or r.get("switch_of") for r in runs)


def _compared(g, cell):
    """The best baseline (if any) and the CoopHash configurations of a cell."""
    best = T.best_baseline(g, cell)
    return ([best] if best else []) + [m for m in T.methods_in(g, cell) if _configuration(g[(*cell, m)])]


def _seeds(n, word="seed"):
    return f"{n} {word}{'s' * (n > 1 and word == 'seed')}"


def _mean_curve(curves, x):
    """([mean x], [mean mAP@1000]) over runs, at the optimizer steps every run has."""
    by_step = {}
    for points in curves:
        for p in points:
            by_step.setdefault(p["step"], []).append((p[x], p["mAP@1000"]))
    steps = sorted(s for s, v in by_step.items() if len(v) == len(curves))
    return [np.mean([v[0] for v in by_step[s]]) for s in steps], [np.mean([v[1] for v in by_step[s]]) for s in steps]


def _pr(plt, g, cell, color):
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    best = T.best_baseline(g, cell)
    for m in _compared(g, cell):
        rs = [r for r in g[(*cell, m)] if r["clean"].get("pr_curve")]
        if not rs:
            continue
        rec = np.mean([r["clean"]["pr_curve"]["recall"] for r in rs], axis=0)
        prec = np.mean([r["clean"]["pr_curve"]["precision"] for r in rs], axis=0)
        c, tail = ("black", " (best baseline)") if m == best else (color[m], "")
        ax.plot(
            rec,
            prec,
            marker=".",
            color=c,
            ls="--" if m == best else "-",
            zorder=3 if m == best else 2,
            label=f"{m}{tail}, {_seeds(len(rs))}",
        )
        if len(rec) > 2:
            ax.annotate("r=2", (rec[2], prec[2]), fontsize=7, color=c, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(
        f"{cell[0]}, {cell[1]} labels/class, {cell[2]} bits\nprecision vs recall over Hamming radius 0..{cell[2]}"
    )
    ax.legend(title="mean over seeds")
    return fig


def _labels(plt, g, cell, color):
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    dataset, bits = cell
    lpcs = sorted({c[1] for c in T.cells(g) if (c[0], c[2]) == cell and c[1]})  # 0: label-free, lines below
    best = [(lpc, b) for lpc in lpcs if (b := T.best_baseline(g, (dataset, lpc, bits)))]
    lines = [("best baseline", "black", "--", "s", [(lpc, g[(dataset, lpc, bits, b)]) for lpc, b in best])]
    for m in sorted({k[3] for k in g if (k[0], k[2]) == cell and _configuration(g[k])}, key=T.method_key):
        lines.append(
            (m, color[m], "-", "o", [(lpc, g[(dataset, lpc, bits, m)]) for lpc in lpcs if (dataset, lpc, bits, m) in g])
        )
    for label, c, ls, marker, points in lines:
        if not points:
            continue
        st = [T.stats(T.values(rs, "clean", "mAP@1000")) for _, rs in points]
        x, y = [p[0] for p in points], [s[1] for s in st]
        ax.errorbar(x, y, yerr=[s[2] or 0.0 for s in st], marker=marker, ls=ls, color=c, capsize=3, label=label)
    for m in sorted(k[3] for k in g if k[:3] == (dataset, 0, bits)):  # label-free methods: a reference line each
        mean = T.stats(T.values(g[(dataset, 0, bits, m)], "clean", "mAP@1000"))[1]
        ax.axhline(
            mean, ls=":", color=color.get(m, "grey"), label=f"{m}, no labels ({_seeds(len(g[(dataset, 0, bits, m)]))})"
        )
    for lpc, b in best:  # which baseline is the best one at each point
        y = T.stats(T.values(g[(dataset, lpc, bits, b)], "clean", "mAP@1000"))[1]
        ax.annotate(b, (lpc, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xticks(lpcs, [str(x) for x in lpcs])
    ax.minorticks_off()
    ax.set(xlabel="labelled images per class", ylabel="mAP@1000")
    ax.set_title(f"{dataset}, {bits} bits: mAP@1000 vs labels\nmean ± std over seeds; best baseline chosen per point")
    ax.legend()
    return fig


def _curves(plt, curves, cell, color):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    for key in sorted((k for k in curves if k[:3] == tuple(cell)), key=lambda k: (T.method_key(k[3]), k[4])):
        m, rs = key[3] + (f" ({key[4]})" if key[4] else ""), curves[key]
        c = color.get(key[3], "grey")
        if rs:
            ax.plot(
                *_mean_curve([r["map_curve"] for r in rs], "step"),
                marker="o",
                ms=3,
                color=c,
                ls="--" if key[4] else "-",
                label=f"{m} ({_seeds(len(rs))})",
            )
        alone = [r for r in rs if r.get("alone")]  # a run that shared the cores has no usable time axis
        if alone:
            x, y = _mean_curve([r["map_curve"] for r in alone], "train_s")
            ax2.plot(x, y, marker="o", ms=3, color=c, ls="--" if key[4] else "-", label=f"{m} ({len(alone)} alone)")
    ylabel = "mAP@1000 (10,000-image database)"
    ax.set(xlabel="optimizer steps", ylabel=ylabel, title="vs optimizer steps")
    ax.legend()
    ax2.set(xlabel="training seconds (uncontended runs only)", ylabel=ylabel, title="vs training time")
    if ax2.lines:
        ax2.legend()
    else:
        ax2.text(
            0.5,
            0.5,
            f"{T.NOT_ALONE}:\nevery run with a curve\nshared the cores",
            ha="center",
            va="center",
            transform=ax2.transAxes,
        )
    fig.suptitle(f"{cell[0]}, {cell[1]} labels/class, {cell[2]} bits: mAP@1000 during training (mean of seeds)")
    return fig


def render(runs, specs, out):
    """Draw the specs' PNGs into `out` (ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9})
    os.makedirs(out, exist_ok=True)
    g = T.groups(runs)
    order = sorted({k[3] for k in g}, key=T.method_key)
    color = {m: plt.cm.tab10(i % 10) for i, m in enumerate(order)}
    draw = {"pr": _pr, "labels": _labels, "curve": _curves}
    curves = curve_groups(runs)
    for kind, name, cell in specs:
        fig = draw[kind](plt, curves if kind == "curve" else g, cell, color)
        for ax in fig.axes:
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
