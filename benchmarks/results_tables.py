"""Markdown tables of the run JSONs that benchmarks/protocol.py writes (no plotting, numpy only).

Every number is a mean over seeds ± the sample standard deviation (ddof=1, none for one seed); a
mean over fewer than MIN_SEEDS seeds is flagged with FEW. Runs are grouped by (dataset,
labels_per_class, bits, method, tag): the tables use the untagged runs, the equal-wall-clock table
also the "equal_time" ones; other tags are separate experiments and only counted in the run list.
Timing (ms/step, training seconds) comes only from runs with "alone": true: a run that shared the
cores has unusable timing (its mAP is fine).
"""

import glob
import json
import math
import os
import shlex

import numpy as np

# The bar (CoopHash >= 1.05x the best baseline) names the first five; code_classifier:fixmatch and orthohash:fixmatch are the same
# pseudo-labels CoopHash's few-label variants use, on the pointwise losses CoopHash's classification
# through the codes takes (Dense, codebook): with the same access to the unlabelled pool they are the
# fair references, so they count as baselines too (a harder bar, never an easier one).
BASELINES = ("code_classifier", "csq", "orthohash", "dpn", "dshgan", "code_classifier:fixmatch", "orthohash:fixmatch")
CORRUPTIONS = ("noise", "blur", "contrast", "rotation", "occlusion")  # coophash_keras.data.corruptions order
EQUAL_TIME = "equal_time"
GENERATIVE_MODELS = ("coophash", "dshgan")  # the models with a generator (their runs are re-run on the fixed one)
LONG = "long"  # a method trained for more steps than the table's, with its mAP curve (tables.sh coophash-long)
MIN_SEEDS = 3
FEW = "†"
FEW_NOTE = f"{FEW} fewer than {MIN_SEEDS} seeds: the std (or its absence) says little."
NOT_ALONE = "not measured alone"
PAIRED_NOTE = (
    "Paired: the change on each seed, in seed order (a seed fixes the labelled images, the queries and the "
    "database, so the split's share of the spread cancels); 2 SE = 2·sd(changes)/√n. Both tests are loose at "
    "3 seeds: a 95 % paired t-test with 2 degrees of freedom needs 4.3 SE."
)
UNRECORDED = "(unrecorded)"  # a config field the reference run's JSON predates: it ran without it
REQUIRED = ("method", "dataset", "labels_per_class", "bits", "seed", "clean")


# ---------------------------------------------------------------- loading and grouping


def load_runs(directories):
    """(runs, notes): the run JSONs directly in each directory, in path order. Files that are not
    run JSONs, and a second copy of a run (same group and seed), are left out with a note."""
    runs, notes, seen = [], [], {}
    for d in directories:
        for path in sorted(glob.glob(os.path.join(d, "*.json"))):
            try:
                with open(path) as fh:
                    r = json.load(fh)
            except (OSError, ValueError) as e:
                notes.append(f"skipped {path}: {e}")
                continue
            if not isinstance(r, dict) or any(k not in r for k in REQUIRED):
                notes.append(f"skipped {path}: not a benchmarks/protocol.py run JSON")
                continue
            r["tag"] = r.get("tag") or ""
            r["_dir"], r["_path"] = d, path
            key = (*group_key(r), r["seed"])
            if key in seen:
                notes.append(f"skipped {path}: the same run as {seen[key]}")
                continue
            seen[key] = path
            runs.append(r)
    return runs, notes


def group_key(r):
    return r["dataset"], r["labels_per_class"], r["bits"], r["method"], r["tag"]


def groups(runs, tag=""):
    """{(dataset, labels_per_class, bits, method): runs sorted by seed} for one tag."""
    out = {}
    for r in runs:
        if r["tag"] == tag:
            out.setdefault(group_key(r)[:4], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in sorted(out.items(), key=lambda kv: sort_key(kv[0]))}


def is_coophash(method):
    return method == "coophash" or method.startswith("coophash:")


def method_key(method):
    """Baselines in BASELINES order, then other methods (triplet), then coophash and its variants."""
    if method in BASELINES:
        return 0, BASELINES.index(method), ""
    if is_coophash(method):
        return 2, int(method != "coophash"), method
    return 1, 0, method


def sort_key(key):
    return (*key[:3], method_key(key[3]))


def cells(g):
    """The sorted (dataset, labels_per_class, bits) of a grouping."""
    return sorted({k[:3] for k in g})


def methods_in(g, cell):
    return sorted((k[3] for k in g if k[:3] == tuple(cell)), key=method_key)


def multi_label(runs):
    return any(r.get("config", {}).get("multi_label") for r in runs)


# ---------------------------------------------------------------- statistics


def value(run, *keys):
    v = run
    for k in keys:
        if not isinstance(v, dict) or v.get(k) is None:
            return None
        v = v[k]
    return float(v)


def values(runs, *keys):
    return [v for v in (value(r, *keys) for r in runs) if v is not None]


def stats(vs):
    """(n, mean, sample std or None for one value)."""
    v = np.asarray(vs, float)
    return len(v), float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else None


def fmt(vs, digits=4, show_n=False):
    if not vs:
        return "—"
    n, mean, sd = stats(vs)
    text = f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")
    return text + (f" (n={n}{FEW if n < MIN_SEEDS else ''})" if show_n else "")


def with_few_note(parts):
    """The parts, with the footnote on FEW when one of them uses it."""
    return parts + [FEW_NOTE] if any(FEW in p for p in parts) else parts


def seeds_cell(n):
    return f"{n} {FEW}" if n < MIN_SEEDS else str(n)


def steps_cell(runs):
    s = sorted({r["steps"] for r in runs})
    return str(s[0]) if len(s) == 1 else f"{s[0]}–{s[-1]}"


def best_baseline(g, cell):
    """The baseline with the highest mean mAP@1000 in the cell (ties: the earlier in BASELINES), or None.
    Where some baseline has MIN_SEEDS seeds, only those count: a screen on one seed whose mean is
    above a 3-seed mean is not yet the reference (its seeds 1-2 say whether it is)."""
    scored = [
        (len(vs) >= MIN_SEEDS, stats(vs)[1], -i, m)
        for i, m in enumerate(BASELINES)
        if (vs := values(g.get((*cell, m), []), "clean", "mAP@1000"))
    ]
    complete = [s for s in scored if s[0]] or scored
    return max(complete)[3] if complete else None


def welch(a, b):
    """(mean(a) - mean(b), two standard errors sqrt(s_a^2/n_a + s_b^2/n_b) * 2), None under 2 seeds."""
    if len(a) < 2 or len(b) < 2:
        return None
    (na, ma, sa), (nb, mb, sb) = stats(a), stats(b)
    return ma - mb, 2 * math.sqrt(sa**2 / na + sb**2 / nb)


def paired(rs, reference, *keys):
    """The change from `reference` seed by seed (a seed fixes the labelled images, the queries and the
    database, so pairing removes the split's share of the spread), then, from 2 shared seeds, whether
    the mean change exceeds two paired standard errors 2·sd(changes)/sqrt(n). "—" without a shared seed."""
    ref = {r["seed"]: value(r, *keys) for r in reference}
    changes = [v - ref[r["seed"]] for r in rs if (v := value(r, *keys)) is not None and ref.get(r["seed"]) is not None]
    if not changes:
        return "—"
    text = " / ".join(f"{c:+.3f}" for c in changes)
    if len(changes) < 2:
        return text
    n, mean, sd = stats(changes)
    two_se = 2 * sd / math.sqrt(n)
    return f"{text} → {'yes' if abs(mean) > two_se else 'no'}: {mean:+.4f} vs 2 SE {two_se:.4f}"


def significance(a, b):
    w = welch(a, b)
    if w is None:
        return "n/a (under 2 seeds)"
    diff, two_se = w
    return f"{'yes' if abs(diff) > two_se else 'no'}: {diff:+.4f} vs 2 SE {two_se:.4f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


# ---------------------------------------------------------------- tables


def relevant_share(runs):
    """The mean share of the database relevant to a query, which is about what a random ranking scores:
    the precision at the largest Hamming radius (every item retrieved), averaged over the runs; None
    without a PR curve."""
    shares = [
        r["clean"]["pr_curve"]["precision"][-1]
        for r in runs
        if (r.get("clean") or {}).get("pr_curve") and r["clean"]["pr_curve"]["radius"][-1] == r["bits"]
    ]
    return float(np.mean(shares)) if shares else None


def retrieval_tables(runs):
    """Per dataset: labels/class x bits x method, mAP@1000 and mAP@all; the best mean per cell in
    bold, among the methods with MIN_SEEDS seeds where there are any (a one-seed screen is no best)."""
    g = groups(runs)
    out = []
    for dataset in sorted({k[0] for k in g}):
        rows = []
        for cell in [c for c in cells(g) if c[0] == dataset]:
            means = {m: stats(values(g[(*cell, m)], "clean", "mAP@1000"))[1] for m in methods_in(g, cell)}
            full = [means[m] for m in means if len(g[(*cell, m)]) >= MIN_SEEDS]
            top = max(full or means.values())
            for m in methods_in(g, cell):
                rs = g[(*cell, m)]
                text = fmt(values(rs, "clean", "mAP@1000"))
                rows.append(
                    [
                        cell[1],
                        cell[2],
                        f"`{m}`",
                        steps_cell(rs),
                        seeds_cell(len(rs)),
                        f"**{text}**" if means[m] == top else text,
                        fmt(values(rs, "clean", "mAP@all")),
                    ]
                )
        in_dataset = [r for r in runs if r["dataset"] == dataset]
        lpc = "labelled images" if multi_label(in_dataset) else "labels/class"
        header = [lpc, "bits", "method", "steps", "seeds", "mAP@1000", "mAP@all"]
        chance = relevant_share(in_dataset)
        note = (
            ""
            if chance is None
            else f"\n\nA random ranking scores about {chance:.3f} here: {chance:.1%} of the database is relevant "
            "to a query on average (the precision with every item retrieved, the last point of the runs' PR curves)."
        )
        out.append(f"#### {dataset}\n\n{table(header, rows)}{note}")
    return "\n\n".join(with_few_note(out)) if out else "No untagged runs."


def bar_table(runs, dataset, labels, bits, tag=""):
    """Every method at each `labels` per class and `bits`: the best baseline named, each other
    method's mAP@1000 as a ratio to it, and whether the difference exceeds two standard errors.
    `tag`: the same comparison among the runs of one tag (e.g. LONG: every method trained longer)."""
    g = groups(runs, tag)
    rows, missing = [], []
    for lpc in labels:
        cell = (dataset, lpc, bits)
        best = best_baseline(g, cell)
        if not methods_in(g, cell):
            missing.append(str(lpc))
            continue
        ref_rs = g.get((*cell, best), [])
        ref = values(ref_rs, "clean", "mAP@1000")
        for m in methods_in(g, cell):
            rs = g[(*cell, m)]
            vs = values(rs, "clean", "mAP@1000")
            if m == best:
                ratio, sig, pairs = "**best baseline**", "", ["", ""]
            elif best:
                ratio, sig = f"{stats(vs)[1] / stats(ref)[1]:.3f}×", significance(vs, ref)
                pairs = [paired(rs, ref_rs, "clean", "mAP@1000"), paired(rs, ref_rs, "ood_mixed", "mAP@1000")]
            else:
                ratio, sig, pairs = "no baseline run", "", ["", ""]
            rows.append([lpc, f"`{m}`", seeds_cell(len(vs)), steps_cell(rs), fmt(vs), ratio, sig, *pairs])
    header = ["labels/class", "method", "seeds", "steps", "mAP@1000", "÷ best baseline", "difference beyond 2 SE?"]
    header += ["paired: change per seed → beyond 2 SE?", "OOD: change per seed, same baseline"]
    text = (
        f"{dataset}, {bits} bits. Best baseline = the highest mean mAP@1000 of {', '.join(BASELINES)}. "
        "2 SE = 2·sqrt(s₁²/n₁ + s₂²/n₂) with sample stds (Welch); the sign is the method minus the best baseline. "
        f"{PAIRED_NOTE}"
    )
    parts = [text] + (with_few_note([table(header, rows)]) if rows else [])
    if missing:
        parts.append(f"Not run yet: {', '.join(missing)} labels/class.")
    return "\n\n".join(parts)


def long_bar_table(runs, dataset, bits):
    """The bar's comparison among the runs trained longer (tag LONG), at the labels/class they cover."""
    labels = sorted({r["labels_per_class"] for r in runs if r["tag"] == LONG and r["dataset"] == dataset})
    if not labels:
        return f"No run with tag `{LONG}` yet."
    return bar_table(runs, dataset, labels, bits, tag=LONG)


def ablation_parent(run):
    """The configuration an ablation run switches a part off in (protocol.py records it as
    `ablation_of`), None for a run that is not one. JSONs from before that field: `coophash:V/ABL`."""
    if "ablation_of" in run:
        return run["ablation_of"]
    return run["method"].split("/", 1)[0] if "/" in run["method"] else None


def asked_fields(run):
    """The config fields a run asked to change: its variant's and its `--set` ones (protocol.py
    records both); for a JSON from before that record, the KEY of each `--set KEY=VALUE` of its command."""
    if "set_overrides" in run:
        return set(run.get("variant_changes") or {}) | set(run["set_overrides"])
    words = shlex.split(run.get("command", ""))
    return {value.split("=", 1)[0] for flag, value in zip(words, words[1:]) if flag == "--set"}


def config_change(run, reference):
    """What a run's config sets differently from its reference's: `field: old → new`, seed aside.
    A field the reference's JSON lacks (added to CoopHashConfig after it ran, so it ran without it)
    counts when the run asked for it, shown as UNRECORDED → new; a field merely newer than the
    reference, left at its default, is no change."""
    a, b, asked = run.get("config") or {}, reference.get("config") or {}, asked_fields(run)
    keys = {k for k in set(a) & set(b) if a[k] != b[k]} | {k for k in asked if k in a and k not in b}
    if run.get("model") and run["model"] not in GENERATIVE_MODELS:  # a moved generator default is no change
        keys = {k for k in keys if k in asked or not _generator_field(k)}
    diff = [f"{k}: {(_shown(b[k]) if k in b else UNRECORDED)} → {_shown(a[k])}" for k in sorted(keys - {"seed"})]
    return "; ".join(diff) if diff else "—"


def _generator_field(name):
    """A config field only a model with a generator reads (CoopHash's and DSH-GAN's)."""
    return name.startswith(("generator_", "langevin_")) or name in ("kl_weight", "reconstruction_reduction")


def _shown(value):
    """A config value in a table cell: floats to 4 significant digits (a tuner's 0.0816711260996145)."""
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _paired_row(rs, reference):
    """mAP@1000 of `rs` beside `reference` restricted to the same seeds (a paired comparison): both,
    the change, whether it exceeds two standard errors, the change under the OOD shift."""
    seeds = {r["seed"] for r in rs}
    ref_rs = [r for r in reference if r["seed"] in seeds]
    vs, ref = values(rs, "clean", "mAP@1000"), values(ref_rs, "clean", "mAP@1000")
    ood, ood_ref = values(rs, "ood_mixed", "mAP@1000"), values(ref_rs, "ood_mixed", "mAP@1000")
    change = f"{stats(vs)[1] - stats(ref)[1]:+.4f}" if ref else "—"
    ood_change = f"{stats(ood)[1] - stats(ood_ref)[1]:+.4f}" if ood and ood_ref else "—"
    sig = significance(vs, ref) if ref else ""
    return [seeds_cell(len(vs)), fmt(vs), fmt(ref), change, sig, paired(rs, ref_rs, "clean", "mAP@1000"), ood_change]


PAIRED_HEADER = ["seeds", "mAP@1000", "{}'s (same seeds)", "change", "beyond 2 SE?", "paired: per seed", "OOD change"]


def ablation_table(runs):
    """Each ablation beside the full configuration of the same cell and seeds."""
    g = groups(runs)
    rows = []
    for key, rs in g.items():
        parent = ablation_parent(rs[0])
        if parent is not None:
            rows.append(
                [
                    *key[:3],
                    f"`{parent}`",
                    f"`{key[3][len(parent) + 1 :]}`",
                    *_paired_row(rs, g.get((*key[:3], parent), [])),
                ]
            )
    if not rows:
        return "No ablation run yet."
    header = ["dataset", "labels/class", "bits", "full configuration", "ablation"]
    header += [h.format("full configuration") for h in PAIRED_HEADER]
    return "\n\n".join(with_few_note([table(header, rows), PAIRED_NOTE]))


def switch_table(runs):
    """Each switch added to a configuration beside that configuration on the same seeds: a
    `+`-variant (`switch_of` in its JSON) and every run with a tag other than equal_time (a config
    change made with `--set`, the reference being the untagged runs of the same method)."""
    untagged = groups(runs)
    pairs = [(key, rs, "", rs[0].get("switch_of")) for key, rs in untagged.items() if rs[0].get("switch_of")]
    for tag in sorted({r["tag"] for r in runs} - {"", EQUAL_TIME}):
        pairs += [(key, rs, tag, key[3]) for key, rs in groups(runs, tag).items()]
    rows = []
    for key, rs, tag, parent in pairs:
        reference = untagged.get((*key[:3], parent), [])
        name = f"tag `{tag}`" if tag else f"`{key[3][len(parent) :]}`"
        change = config_change(rs[0], reference[0]) if reference else "—"
        rows.append([*key[:3], f"`{parent}`", name, change, steps_cell(rs), *_paired_row(rs, reference)])
    if not rows:
        return "No switch run yet."
    header = ["dataset", "labels/class", "bits", "configuration", "switch", "config change", "steps"]
    header += [h.format("configuration") for h in PAIRED_HEADER]
    parts = [table(header, rows), PAIRED_NOTE]
    if any(UNRECORDED in row[5] for row in rows):
        parts.append(f"{UNRECORDED}: the configuration's runs predate the field, so they ran without it.")
    return "\n\n".join(with_few_note(parts))


def _robust(r):
    return "ood_mixed" in r or "corrupted_queries" in r


def _kinds(rs):
    found = {k for r in rs for k in (r.get("corrupted_queries") or {}) if k != "clean"}
    return [k for k in CORRUPTIONS if k in found] + sorted(found - set(CORRUPTIONS))


def robustness_tables(runs):
    """mAP@1000 under the OOD shift and with corrupted queries (without recover), then with
    CoopHash.recover: recovered mAP@1000 (change from the same runs without recover)."""
    g = {k: [r for r in rs if _robust(r)] for k, rs in groups(runs).items()}
    g = {k: rs for k, rs in g.items() if rs}
    if not g:
        return "No run with `--ood`, `--corrupted` or `--recover` yet."
    kinds = _kinds([r for rs in g.values() for r in rs])
    rows, rec_rows = [], []
    for key, rs in g.items():

        def cell(*keys, rs=rs):  # the seed count where fewer runs than the row's have this evaluation
            vs = values(rs, *keys)
            return fmt(vs, show_n=0 < len(vs) < len(rs))

        rows.append(
            [*key[:3], f"`{key[3]}`", seeds_cell(len(rs)), cell("clean", "mAP@1000"), cell("ood_mixed", "mAP@1000")]
            + [cell("corrupted_queries", k, "mAP@1000") for k in kinds]
        )
        with_rec = [r for r in rs if value(r, "corrupted_queries", "clean", "recovered_mAP@1000") is not None]
        if with_rec:
            cols = []
            for k in ["clean", *kinds]:
                before = ("clean", "mAP@1000") if k == "clean" else ("corrupted_queries", k, "mAP@1000")
                after = values(with_rec, "corrupted_queries", k, "recovered_mAP@1000")
                change = stats(after)[1] - stats(values(with_rec, *before))[1] if after else None
                cols.append(fmt(after) + ("" if change is None else f" ({change:+.4f})"))
            rec_rows.append([*key[:3], f"`{key[3]}`", seeds_cell(len(with_rec)), *cols])
    head = ["dataset", "labels/class", "bits", "method", "seeds"]
    parts = [
        "mAP@1000; OOD = queries and database corrupted (mixed); the corruption columns = queries "
        "corrupted, clean database, no recover.",
        table([*head, "clean", "OOD", *kinds], rows),
    ]
    if rec_rows:
        parts += [
            "With `CoopHash.recover` on the queries: recovered mAP@1000 (change from the same runs without recover).",
            table([*head, "clean queries", *kinds], rec_rows),
        ]
    return "\n\n".join(with_few_note(parts))


def cpu_of(run):
    """The CPU a run was timed on: timings compare only between runs on one CPU."""
    return (run.get("machine") or {}).get("cpu") or "unrecorded CPU"


def _by_cpu(rs, show):
    """`show(runs)` of the uncontended runs, one entry per CPU (named where there are several)."""
    alone = [r for r in rs if r.get("alone")]
    cpus = sorted({cpu_of(r) for r in alone})
    if len(cpus) == 1:
        return show(alone)
    return "; ".join(f"{show([r for r in alone if cpu_of(r) == c])} ({c})" for c in cpus) or NOT_ALONE


def _train_s(rs):
    return _by_cpu(rs, lambda alone: fmt(values(alone, "train_s"), 0, show_n=True))


def equal_time_table(runs):
    """Baselines trained for CoopHash's wall time ("equal_time") beside the equal-steps runs, with
    CoopHash's own rows of the same cells for reference."""
    et, g = groups(runs, EQUAL_TIME), groups(runs)
    if not et:
        return 'No run tagged "equal_time" yet.'
    rows = []
    for cell in cells(et):
        for m in sorted(set(methods_in(et, cell)) | {m for m in methods_in(g, cell) if is_coophash(m)}, key=method_key):
            same, timed = g.get((*cell, m), []), et.get((*cell, m), [])
            if timed:  # equal steps on the seeds the equal-time runs have, so the two columns compare
                same = [r for r in same if r["seed"] in {t["seed"] for t in timed}]
            rows.append(
                [*cell, f"`{m}`"]
                + ([steps_cell(same), fmt(values(same, "clean", "mAP@1000"), show_n=True)] if same else ["—", "—"])
                + ([steps_cell(timed), fmt(values(timed, "clean", "mAP@1000"), show_n=True)] if timed else ["—", "—"])
                + [_train_s(timed or same)]
            )
    header = ["dataset", "labels/class", "bits", "method", "steps", "mAP@1000", "steps (equal time)"]
    header += ["mAP@1000 (equal time)", "train s (alone runs)"]
    return (
        "Equal steps = the untagged runs (for a method with equal-time runs, only the same seeds); equal time = "
        "the runs tagged `equal_time` (as many steps as fit into CoopHash's training time). Training seconds from "
        "uncontended runs only (equal-time runs where there are).\n\n" + table(header, rows)
    )


def cost_table(runs):
    """ms/step from runs with "alone": true only: per cell and CPU the best baseline's and each
    CoopHash method's, with the ratio CoopHash / best baseline (both timed on that CPU)."""
    g = groups(runs)
    if not any(r.get("alone") and r.get("ms_per_step") for rs in g.values() for r in rs):
        return (
            f"ms/step: **{NOT_ALONE}**: every run shared the cores (`alone: false`, or no ms/step recorded), "
            "so no timing is reported."
        )

    def ms(cell, m, cpu):
        return values([r for r in g.get((*cell, m), []) if r.get("alone") and cpu_of(r) == cpu], "ms_per_step")

    coop = sorted({k[3] for k in g if is_coophash(k[3])}, key=method_key)
    rows = []
    for cell in cells(g):
        if all(r.get("steps") == 0 for k, rs in g.items() if k[:3] == cell for r in rs):
            continue  # label-free methods fitted in closed form (itq, lsh): no optimizer step to time
        best = best_baseline(g, cell)
        cpus = sorted({cpu_of(r) for k, rs in g.items() if k[:3] == cell for r in rs if r.get("alone")})
        timed_elsewhere = best and any(r.get("alone") for r in g.get((*cell, best), []))
        for cpu in cpus or ["—"]:
            ref = ms(cell, best, cpu) if best else []
            ref_cell = fmt(ref, 0, show_n=True) if ref else ("no run on this CPU" if timed_elsewhere else NOT_ALONE)
            row = [*cell, cpu, f"`{best}`" if best else "—", ref_cell]
            for m in coop:
                row.append(_cost_cell(g, cell, m, ms(cell, m, cpu), ref))
            rows.append(row)
    header = ["dataset", "labels/class", "bits", "CPU", "best baseline", "its ms/step", *[f"`{m}`" for m in coop]]
    return (
        "ms/step (median over the epochs after the first) from uncontended runs only, per CPU (the same step "
        "takes different times on different machines); in bold the ratio CoopHash / best baseline (best by mean "
        "mAP@1000 in the same cell), both timed on that CPU.\n\n" + table(header, rows)
    )


def _cost_cell(g, cell, m, own, ref):
    """One CoopHash method's ms/step on one CPU: "—" where it has no run (on that CPU)."""
    if not any(r.get("alone") for r in g.get((*cell, m), [])):
        return NOT_ALONE if (*cell, m) in g else "—"
    if not own:
        return "—"
    return fmt(own, 0, show_n=True) + (f", **{stats(own)[1] / stats(ref)[1]:.2f}×**" if ref else "")


def load_step_times(path):
    """benchmarks/bench_train_step.py's JSON, or None when it has not been written; a ValueError
    naming the file when it cannot be read."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the step times {path!r}: {e}") from None


def step_time_table(path):
    """The train-step times of benchmarks/bench_train_step.py (one JSON), when it ran alone: every
    method on the same batch, each one's ratio to the fastest, CoopHash's parts."""
    res = load_step_times(path)
    if res is None:
        return f"No `{os.path.basename(path)}` yet (benchmarks/bench_train_step.py)."
    if not res.get("alone"):
        return f"`{os.path.basename(path)}` was not measured alone: no timing is reported."
    methods = res["methods"]
    fastest = min(r["train_step_s"] for r in methods.values())
    rows = []
    for m, r in methods.items():
        parts = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in r.get("parts_s", {}).items())
        rows.append([f"`{m}`", f"{1e3 * r['train_step_s']:.0f}", f"{r['train_step_s'] / fastest:.1f}×", parts or ""])
    head = (
        f"`benchmarks/bench_train_step.py`, alone (other processes took {res.get('other_cores')} cores), "
        f"{res.get('cpus')} cores of {res.get('cpu') or 'an unrecorded CPU'}, batch {res['batch']} of {'×'.join(map(str, res['image_shape']))} images "
        "(+ an unlabelled batch for the methods that use one), median of the timed steps after two warm-ups."
    )
    return head + "\n\n" + table(["method", "ms/step", "÷ fastest", "parts (ms)"], rows)


def step_time_tables(path):
    """The step times of `path`, then those kept beside it from other CPUs (`<name>_<CPU>.json`, which
    bench_train_step.py --unless-same-cpu leaves when it measures again on a new one)."""
    stem, ext = os.path.splitext(path)
    kept = sorted(glob.glob(f"{glob.escape(stem)}_*{ext}"))
    parts = [step_time_table(path)]
    for other in kept:
        parts += [f"Measured earlier on another CPU (`{os.path.basename(other)}`):", step_time_table(other)]
    return "\n\n".join(parts)


def summary_table(runs, dataset, labels, bits, step_times_path):
    """The README's short table of one cell: every method with MIN_SEEDS seeds (screens, partial
    rows and ablations stay in docs/RESULTS.md), its seeds, mAP@1000, mAP@all and OOD mAP@1000 (3 decimals), and
    its ms/step from benchmarks/bench_train_step.py when that ran alone."""
    g = groups(runs)
    cell = (dataset, labels, bits)
    res = load_step_times(step_times_path)
    step_s = {m: r["train_step_s"] for m, r in res["methods"].items()} if res and res.get("alone") else {}
    rows = []
    for m in methods_in(g, cell):
        rs = g[(*cell, m)]
        if len(rs) < MIN_SEEDS or any(ablation_parent(r) for r in rs):
            continue
        rows.append(
            [
                f"`{m}`",
                ",".join(str(r["seed"]) for r in rs),
                fmt(values(rs, "clean", "mAP@1000"), 3),
                fmt(values(rs, "clean", "mAP@all"), 3),
                fmt(values(rs, "ood_mixed", "mAP@1000"), 3),
                f"{1e3 * step_s[m]:.0f}" if m in step_s else "—",
            ]
        )
    if not rows:
        return f"No method of {dataset}, {labels} labels/class, {bits} bits has {MIN_SEEDS} seeds yet."
    timed = f"ms/step (alone, {res.get('cpu') or 'unrecorded CPU'})" if step_s else "ms/step (alone)"
    return table(["method", "seeds", "mAP@1000", "mAP@all", "OOD mAP@1000", timed], rows)


def runs_summary(runs, display=lambda d: d):
    """Per directory: run count, uncontended count, dates, machines; then the distinct commands."""
    rows = []
    for d in sorted({r["_dir"] for r in runs}, key=display):
        rs = [r for r in runs if r["_dir"] == d]
        tags = sorted({r["tag"] for r in rs})
        done = sorted(r.get("finished", "") for r in rs)
        machines = sorted(
            {
                f"{m.get('cores')} cores {m.get('cpu')}{', GPU' if m.get('gpu') else ''}, TF {m.get('tensorflow')}"
                for m in (r.get("machine") or {} for r in rs)
            }
        )
        rows.append(
            [
                f"`{display(d)}`",
                len(rs),
                sum(bool(r.get("alone")) for r in rs),
                ", ".join(f"`{t}`" if t else "(none)" for t in tags),
                f"{done[0]} – {done[-1]}",
                "; ".join(machines),
            ]
        )
    commands = {}
    for r in runs:
        commands[r.get("command", "?")] = commands.get(r.get("command", "?"), 0) + 1
    header = ["directory", "runs", "alone", "tags", "finished", "machine"]
    cmd = "\n".join(f"- {n} run{'s' * (n > 1)}: `{c}`" for c, n in sorted(commands.items()))
    return table(header, rows) + "\n\nCommands:\n\n" + cmd


# ---------------------------------------------------------------- the re-run on the working generator


def rerun_runs(new_runs, old_runs, dataset):
    """The re-run's comparison set: the new runs (protocol.py --diagnose into their own folder), and
    the old untagged runs of every method without a generator (the fix does not touch them) that
    the new folder does not hold untagged runs of itself, in `dataset` (a baseline's tagged runs there,
    equal_time or corrupt_train20, compare against its old untagged ones)."""
    held = {r["method"] for r in new_runs if r["tag"] == ""}
    kept = [
        r
        for r in old_runs
        if r["dataset"] == dataset
        and r["tag"] == ""
        and r["model"] not in GENERATIVE_MODELS
        and r["method"] not in held
    ]
    return new_runs + kept


def generator_fix_table(new_runs, old_runs):
    """Each method re-run on the working generator beside its own old runs (the same dataset, labels,
    bits and tag, on the collapsed generator): mAP@1000 and mAP@all of both, paired by seed."""
    old = groups(old_runs)
    rows = []
    for key, rs in groups(new_runs).items():
        before = old.get(key)
        if not before:
            continue
        latent = sorted({str(r.get("config", {}).get("generator_latent", "(unrecorded)")) for r in before})
        now = sorted({str(r.get("config", {}).get("generator_latent", "(unrecorded)")) for r in rs})
        rows.append(
            [
                key[0],
                key[1],
                key[2],
                f"`{key[3]}`",
                f"{', '.join(latent)} → {', '.join(now)}",
                *_paired_row(rs, before)[:6],
                fmt(values(before, "clean", "mAP@all")),
                fmt(values(rs, "clean", "mAP@all")),
            ]
        )
    if not rows:
        return "No method re-run yet beside its old runs."
    header = ["dataset", "labels", "bits", "method", "generator_latent", "seeds", "mAP@1000 now"]
    header += ["mAP@1000 before (same seeds)", "change", "beyond 2 SE?", "paired: per seed", "mAP@all before", "now"]
    return "\n\n".join(with_few_note([table(header, rows)]))


def generator_table(runs):
    """What each generative run's generator makes (protocol.py --diagnose): spread ratio (mean over
    classes; min = the lowest class of any seed), class consistency against the reference
    classifier's accuracy on real images, Fréchet distances of x̂ and x̃ with the real-vs-real floor,
    active units of q(z|x) and how much of z it recovers from x̃. Tagged runs (a switch, corrupted
    training) get their own rows: what a switch does to the samples is half of what it does."""
    tags = sorted({r["tag"] for r in runs})
    g = {
        (*key, tag): [r for r in rs if r.get("generator_diagnostics")]
        for tag in tags
        for key, rs in groups(runs, tag).items()
    }
    rows = []
    for key, rs in g.items():
        if not rs:
            continue
        method = f"`{key[3]}`" + (f" tag `{key[4]}`" if key[4] else "")

        def pick(*keys, rs=rs):
            return values([r["generator_diagnostics"] for r in rs], *keys)

        low = min(pick("spread_ratio", "min"))
        revised = pick("frechet", "revised")
        rows.append(
            [
                *key[:3],
                method,
                seeds_cell(len(rs)),
                f"{fmt(pick('spread_ratio', 'mean'), 2)} (min {low:.2f})",
                fmt(pick("class_consistency", "generated"), 2),
                fmt(pick("class_consistency", "revised"), 2) if pick("class_consistency", "revised") else "—",
                f"{stats(pick('class_consistency', 'reference_accuracy'))[1]:.3f}",
                fmt(pick("frechet", "generated"), 2),
                fmt(revised, 2) if revised else "—",
                f"{stats(pick('frechet', 'real'))[1]:.2f}",
                fmt(pick("latent_real", "active_units"), 1) if pick("latent_real", "active_units") else "—",
                fmt(pick("latent_revised", "z_recovery_r2"), 2) if pick("latent_revised", "z_recovery_r2") else "—",
            ]
        )
    if not rows:
        return "No run with `--diagnose` yet."
    header = ["dataset", "labels/class", "bits", "method", "seeds", "spread ratio", "consistency x̂"]
    header += ["consistency x̃", "reference accuracy", "FD x̂", "FD x̃", "FD floor", "active units", "z R² from x̃"]
    note = (
        "docs/GENERATOR.md defines each column. Spread ratio: samples' pixel spread over z ÷ real images', "
        "per class. Consistency: the share of samples a separate reference classifier assigns to the class asked "
        "for. FD: per-class Fréchet distance in the reference classifier's 32-d features to held-out real images; "
        "the floor is real against real."
    )
    return "\n\n".join(with_few_note([note, table(header, rows)]))
