"""benchmarks/make_results_doc.py on synthetic run JSONs: the statistics, the best-baseline choice,
the two-standard-error flag, timing from uncontended runs only, the doc's markers, idempotence."""

import json
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import make_results_doc
import results_tables as T

PROSE_BEFORE = "# Results\n\nThe lead's prose stays.\n\n<!-- tables -->\n"
PROSE_AFTER = "<!-- /tables -->\n\n## Reproduce\n\nMore prose.\n"


def run(method, seed, m1000, lpc=50, bits=32, tag="", alone=False, ms=100.0, steps=1000, **extra):
    k = bits + 1
    return {
        "method": method,
        "dataset": "fashion_mnist",
        "labels_per_class": lpc,
        "bits": bits,
        "seed": seed,
        "tag": tag,
        "steps": steps,
        "alone": alone,
        "ms_per_step": ms,
        "train_s": ms * steps / 1000,
        "map_curve": None,
        "command": f"python benchmarks/protocol.py --methods {method}",
        "machine": {"cpu": "test", "cores": 2, "gpu": False, "tensorflow": "x"},
        "finished": f"2026-01-0{seed + 1} 00:00:00 UTC",
        "clean": {
            "mAP@1000": m1000,
            "mAP@all": m1000 - 0.05,
            "P@1000": m1000,
            "pr_curve": {
                "radius": list(range(k)),
                "precision": [m1000 - 0.5 * i / k for i in range(k)],
                "recall": [0.2 + 0.8 * i / (k - 1) for i in range(k)],
            },
        },
        **extra,
    }


def write(directory, runs):
    os.makedirs(directory, exist_ok=True)
    for r in runs:
        name = f"{r['method'].replace(':', '-').replace('/', '-')}_L{r['labels_per_class']}_K{r['bits']}_s{r['seed']}_{r['tag']}.json"
        with open(os.path.join(directory, name), "w") as fh:
            json.dump(r, fh)
    return str(directory)


def bar_runs():
    """code_classifier < csq (the best baseline) < triplet (not a baseline); coophash clearly above
    csq, coophash:paper level with it, coophash:one with a single seed."""
    runs = [run("code_classifier", s, v) for s, v in enumerate([0.60, 0.62, 0.64])]
    runs += [run("csq", s, v) for s, v in enumerate([0.70, 0.71, 0.72])]
    runs += [run("triplet", s, v) for s, v in enumerate([0.90, 0.91, 0.92])]
    runs += [run("coophash", s, v) for s, v in enumerate([0.80, 0.81, 0.82])]
    runs += [run("coophash:paper", s, v) for s, v in enumerate([0.69, 0.73, 0.71])]
    runs += [run("coophash:one", 0, 0.75)]
    return runs


def row(text, method):
    return next(line for line in text.splitlines() if f"`{method}`" in line)


def test_mean_std_and_few_seeds(tmp_path):
    screen = [run("dpn", 0, 0.5), run("dpn", 1, 0.6), run("csq", 0, 0.9)]  # csq: one seed above them all
    runs, _ = T.load_runs([write(tmp_path / "r", bar_runs()[:3] + screen)])
    text = T.retrieval_tables(runs)
    assert "**" not in row(text, "csq")  # a one-seed screen is not marked best over three seeds
    cc = row(text, "code_classifier")
    assert (
        "| 3 | **0.6200 ± 0.0200** | 0.5700 ± 0.0200 |" in cc
    )  # best in bold; sample std (ddof=1) of 0.60, 0.62, 0.64
    assert f"| 2 {T.FEW} | 0.5500 ± 0.0707 |" in row(text, "dpn") and T.FEW_NOTE in text
    full, _ = T.load_runs([write(tmp_path / "full", bar_runs()[:3])])
    assert T.FEW_NOTE not in T.retrieval_tables(full)  # the footnote only where a row needs it
    assert T.fmt([0.75]) == "0.7500" and T.stats([0.75]) == (1, 0.75, None)


def test_best_baseline_is_among_the_five(tmp_path):
    runs, _ = T.load_runs([write(tmp_path / "r", bar_runs())])
    assert T.best_baseline(T.groups(runs), ("fashion_mnist", 50, 32)) == "csq"  # not triplet, not coophash
    screened, _ = T.load_runs([write(tmp_path / "screen", bar_runs() + [run("orthohash:fixmatch", 0, 0.75)])])
    # a one-seed screen above csq's 3-seed mean is not the reference while csq has 3 seeds...
    assert T.best_baseline(T.groups(screened), ("fashion_mnist", 50, 32)) == "csq"
    # ...and where no baseline has 3 seeds, the best mean of what there is
    few, _ = T.load_runs([write(tmp_path / "few", [run("csq", 0, 0.7), run("orthohash:fixmatch", 0, 0.75)])])
    assert T.best_baseline(T.groups(few), ("fashion_mnist", 50, 32)) == "orthohash:fixmatch"
    text = T.bar_table(runs, "fashion_mnist", [50, 500], 32)
    assert "**best baseline**" in row(text, "csq")
    assert "1.141×" in row(text, "coophash")  # 0.81 / 0.71
    assert "Not run yet: 500 labels/class." in text
    assert "| 1000 |" in row(text, "coophash") and "3000" not in text  # the longer runs are another table
    longer = [run("csq", s, 0.70, tag=T.LONG, steps=3000) for s in range(3)]
    longer += [run("coophash", s, v, tag=T.LONG, steps=3000) for s, v in enumerate([0.79, 0.80, 0.81])]
    runs, _ = T.load_runs([write(tmp_path / "long", bar_runs() + longer)])
    text = T.long_bar_table(runs, "fashion_mnist", 32)
    assert "**best baseline**" in row(text, "csq") and "| 3000 | 0.8000 ± 0.0100 | 1.143× | yes" in row(
        text, "coophash"
    )
    assert "Not run yet" not in text and "triplet" not in text  # only the labels/class and methods run longer
    assert T.long_bar_table(T.load_runs([write(tmp_path / "none", bar_runs())])[0], "fashion_mnist", 32).startswith(
        "No"
    )


def test_ablations_sit_beside_their_full_configuration(tmp_path):
    semi = "coophash:semi"  # protocol.py records `ablation_of`; the JSONs before it have only the name
    runs = [run(semi, s, v, ood_mixed={"mAP@1000": 0.6}) for s, v in enumerate([0.76, 0.77, 0.78])]
    runs += [run("coophash:semi/no_energy_head", s, v, ablation_of=semi) for s, v in enumerate([0.74, 0.75, 0.76])]
    runs += [run("coophash:no_inference_head", 0, 0.5, ablation_of="coophash")]
    runs += [run("coophash:classifier_beside_codes", 1, 0.6, ablation_of="coophash")]  # no "no_" in its name
    runs += [run("coophash:semi/no_pseudo_labels", 2, 0.70)]  # an old JSON without `ablation_of`
    runs += [run("coophash:semi", 0, 0.7, tag="x", ablation_of=None)]  # a variant is no ablation
    runs, _ = T.load_runs([write(tmp_path / "r", runs)])
    text = T.ablation_table(runs)
    semi = row(text, "no_energy_head").split(" | ")
    assert semi[3:9] == ["`coophash:semi`", "`no_energy_head`", "3", "0.7500 ± 0.0100", "0.7700 ± 0.0100", "-0.0200"]
    assert semi[9].startswith("yes: -0.0200 vs 2 SE 0.0163") and semi[11] == "— |"  # no OOD for the ablation
    assert semi[10] == "-0.020 / -0.020 / -0.020 → yes: -0.0200 vs 2 SE 0.0000"  # paired: the same change per seed
    one = row(text, "no_pseudo_labels").split(" | ")  # against seed 2 of the full configuration only
    assert one[5:9] == [f"1 {T.FEW}", "0.7000", "0.7800", "-0.0800"]
    default = row(text, "no_inference_head").split(" | ")
    assert default[3] == "`coophash`" and default[7:9] == ["—", "—"]  # the default was not run
    assert row(text, "classifier_beside_codes").split(" | ")[3] == "`coophash`"
    assert text.count("\n| fashion_mnist") == 4
    assert T.ablation_table(T.load_runs([write(tmp_path / "none", [run("csq", 0, 0.7)])])[0]) == "No ablation run yet."


def test_switches_sit_beside_the_configuration_they_are_added_to(tmp_path):
    few, cfg = "coophash:fewlabels", {"nll_weight": 0.1, "unlabeled_nll_weight": 0.0, "seed": 0}
    runs = [run(few, s, v, config={**cfg, "seed": s}) for s, v in enumerate([0.76, 0.77, 0.78])]
    jem = {**cfg, "unlabeled_nll_weight": 0.1, "divergence_policy": "stop"}  # a field newer than the reference
    runs += [run(few + "+jem", 1, 0.80, config=jem, switch_of=few, ood_mixed={"mAP@1000": 0.6})]
    runs += [run("orthohash", 0, 0.77, config={"augmentation": ""})]
    runs += [run("orthohash", 0, 0.79, tag="augment", config={"augmentation": "flip"})]  # a --set change
    runs += [run("dpn", 0, 0.70, tag="augment", config={"augmentation": "flip"})]  # no untagged dpn
    runs += [run("coophash:semi+jem", 0, 0.7, switch_of="coophash:semi")]  # its configuration was not run
    # references that predate the field a run changes: asked for by --set in the command (an old JSON)
    # or recorded by protocol.py; a field the run did not ask for is never a change
    runs += [run("csq", 0, 0.70, config={"x": 1}), run("dpn", 1, 0.70, config={"x": 1})]
    old_json = {"command": "python benchmarks/protocol.py --methods csq --set augmentation=flip,translate=0.1 --tag a"}
    runs += [run("csq", 0, 0.72, tag="a", config={"x": 1, "augmentation": "flip,translate=0.1"}, **old_json)]
    recorded = {"set_overrides": {"augmentation": "flip"}, "variant_changes": {}, "command": ""}
    runs += [run("dpn", 1, 0.71, tag="a", config={"x": 1, "augmentation": "flip", "newer": 0}, **recorded)]
    text = T.switch_table(T.load_runs([write(tmp_path / "r", runs)])[0])
    jem_row = row(text, "+jem").split(" | ")
    assert jem_row[3:6] == [f"`{few}`", "`+jem`", "unlabeled_nll_weight: 0 → 0.1"]  # the seed is no change
    assert jem_row[7:11] == [f"1 {T.FEW}", "0.8000", "0.7700", "+0.0300"]  # against seed 1 only
    assert jem_row[11] == "n/a (under 2 seeds)" and jem_row[13] == "— |"  # the reference has no OOD run
    assert jem_row[12] == "+0.030"  # one shared seed: its change, no test
    augment = next(line for line in text.splitlines() if "`orthohash`" in line).split(" | ")
    assert augment[4:6] == ["tag `augment`", "augmentation: '' → 'flip'"] and augment[10] == "+0.0200"
    for lonely in ("`dpn` | tag `augment`", "`coophash:semi`"):
        assert next(line for line in text.splitlines() if lonely in line).split(" | ")[9:11] == ["—", "—"]
    for method, expected in (("csq", "'flip,translate=0.1'"), ("dpn", "'flip'")):
        cells = next(line for line in text.splitlines() if f"`{method}` | tag `a`" in line).split(" | ")
        assert cells[5] == f"augmentation: {T.UNRECORDED} → {expected}" and cells[10] in ("+0.0200", "+0.0100")
    assert f"{T.UNRECORDED}: the configuration's runs predate the field" in text
    tuned = {"config": {"langevin_step_size": 0.18018027589419894, "seed": 0, "classifier_input": "codes"}}
    default = {"config": {"langevin_step_size": 1.0, "seed": 1, "classifier_input": "codes"}}
    assert T.config_change(tuned, default) == "langevin_step_size: 1 → 0.1802"  # a tuner's float, shortened
    # a generator default that moved between two runs of a model without a generator is no change to it
    moved = {"generator_latent": "taught", "kl_weight": 1.0, "augmentation": "flip"}
    before = {"generator_latent": "inferred", "kl_weight": 1.0, "augmentation": ""}
    assert T.config_change({"model": "orthohash", "config": moved}, {"config": before}) == "augmentation: '' → 'flip'"
    assert "generator_latent: 'inferred' → 'taught'" in T.config_change(
        {"model": "dshgan", "config": moved}, {"config": before}
    )
    assert T.switch_table(T.load_runs([write(tmp_path / "none", [run("csq", 0, 0.7)])])[0]) == "No switch run yet."


def test_two_standard_errors(tmp_path):
    a, b = [0.80, 0.81, 0.82], [0.70, 0.71, 0.72]
    diff, two_se = T.welch(a, b)
    assert diff == pytest.approx(0.1) and two_se == pytest.approx(2 * math.sqrt(0.01**2 / 3 + 0.01**2 / 3))
    runs, _ = T.load_runs([write(tmp_path / "r", bar_runs())])
    text = T.bar_table(runs, "fashion_mnist", [50], 32)
    assert "yes: +0.1000" in row(text, "coophash")
    assert "no: +0.0000" in row(text, "coophash:paper")  # level: mean 0.71, std 0.02
    assert "n/a (under 2 seeds)" in row(text, "coophash:one")
    # paired by seed: coophash is 0.10 above csq on every seed; coophash:paper -0.01, +0.02, -0.01
    assert "| +0.100 / +0.100 / +0.100 → yes: +0.1000 vs 2 SE 0.0000 | — |" in row(text, "coophash")
    assert "| -0.010 / +0.020 / -0.010 → no: +0.0000 vs 2 SE 0.0200 |" in row(text, "coophash:paper")
    assert row(text, "coophash:one").endswith("| +0.050 | — |") and T.PAIRED_NOTE in text


def test_pairing_by_seed_sees_a_small_steady_gain_that_the_seed_spread_hides(tmp_path):
    ood = lambda v: {"ood_mixed": {"mAP@1000": v}}  # noqa: E731
    runs = [run("csq", s, v, **ood(v - 0.1)) for s, v in enumerate([0.60, 0.70, 0.80])]
    runs += [run("coophash", s, v, **ood(v - 0.1)) for s, v in enumerate([0.61, 0.71, 0.815])]
    runs += [run("coophash:half", 2, 0.9)]  # shares one seed with csq and has no OOD evaluation
    runs, _ = T.load_runs([write(tmp_path / "r", runs)])
    text = T.bar_table(runs, "fashion_mnist", [50], 32)
    cells = row(text, "coophash").split(" | ")
    assert cells[6].startswith("no: +0.0117")  # Welch: far inside the between-seed spread of 0.1
    mean, sd = 0.035 / 3, math.sqrt(((0.01 - 0.035 / 3) ** 2 * 2 + (0.015 - 0.035 / 3) ** 2) / 2)
    paired = f"+0.010 / +0.010 / +0.015 → yes: +{mean:.4f} vs 2 SE {2 * sd / math.sqrt(3):.4f}"
    assert cells[7] == paired and cells[8] == paired + " |"  # OOD moves with the clean mAP here
    assert row(text, "coophash:half").endswith("| +0.100 | — |")
    assert T.paired([], runs, "clean", "mAP@1000") == "—"


def test_timing_only_from_runs_alone(tmp_path):
    contended = [run("csq", s, 0.7, ms=999.0) for s in range(3)] + [
        run("coophash", s, 0.8, ms=5555.0) for s in range(3)
    ]
    runs, _ = T.load_runs([write(tmp_path / "a", contended)])
    text = T.cost_table(runs)
    assert T.NOT_ALONE in text and "999" not in text and "5555" not in text
    alone = [run("csq", 3, 0.7, alone=True, ms=100.0), run("coophash", 3, 0.8, alone=True, ms=300.0)]
    runs, _ = T.load_runs([write(tmp_path / "b", contended + alone)])
    text = T.cost_table(runs)
    assert "100 (n=1†)" in text and "300 (n=1†), **3.00×**" in text
    assert "999" not in text and "5555" not in text
    # another CPU's timings get their own row: a ratio never mixes machines
    other = {"cpu": "other", "cores": 2}
    elsewhere = [run("coophash", 4, 0.8, alone=True, ms=120.0, machine=other)]
    runs, _ = T.load_runs([write(tmp_path / "cpus", contended + alone + elsewhere)])
    text = T.cost_table(runs)
    assert "| test | `csq` | 100 (n=1†) | 300 (n=1†), **3.00×** |" in text
    assert "| other | `csq` | no run on this CPU | 120 (n=1†) |" in text
    both = [run("csq", 4, 0.7, alone=True, ms=40.0, machine=other)]
    runs, _ = T.load_runs([write(tmp_path / "cpus2", contended + alone + elsewhere + both)])
    assert "| other | `csq` | 40 (n=1†) | 120 (n=1†), **3.00×** |" in T.cost_table(runs)
    et = [run("csq", s, 0.75, tag=T.EQUAL_TIME, alone=True, steps=3000, machine=m) for s, m in [(0, other), (1, {})]]
    runs, _ = T.load_runs([write(tmp_path / "et_cpus", et)])
    assert "300 (n=1†) (other); 300 (n=1†) (unrecorded CPU)" in T.equal_time_table(runs)
    # the equal-time table reports training seconds of uncontended runs only, too
    et = [run("csq", s, 0.75, tag=T.EQUAL_TIME, ms=999.0, steps=3000) for s in range(3)]
    runs, _ = T.load_runs([write(tmp_path / "c", contended + et)])
    text = T.equal_time_table(runs)
    assert "| 1000 | 0.7000 ± 0.0000 (n=3) | 3000 | 0.7500 ± 0.0000 (n=3) | not measured alone |" in row(text, "csq")
    assert "2997" not in text and "5555" not in text
    # one equal-time seed is compared with the same seed at equal steps, not the mean of all three
    seeds = [run("dpn", s, v) for s, v in enumerate([0.60, 0.70, 0.80])] + [run("dpn", 2, 0.85, tag=T.EQUAL_TIME)]
    runs, _ = T.load_runs([write(tmp_path / "d", seeds)])
    assert "| 1000 | 0.8000 (n=1†) | 1000 | 0.8500 (n=1†) |" in row(T.equal_time_table(runs), "dpn")


def test_bar_at_the_other_code_lengths(tmp_path):
    at16 = [run("csq", s, v, bits=16) for s, v in enumerate([0.60, 0.61, 0.62])]
    at16 += [run("coophash", s, v, bits=16) for s, v in enumerate([0.50, 0.52, 0.54])]
    results = write(tmp_path / "results", bar_runs() + at16 + [run("csq", 0, 0.9, lpc=500, bits=16)])
    doc = tmp_path / "RESULTS.md"
    doc.write_text(PROSE_BEFORE + PROSE_AFTER, encoding="utf-8")
    make_results_doc.main([results, "--only", "--doc", str(doc), "--out", str(tmp_path / "png"), "--no-plots"])
    text = doc.read_text(encoding="utf-8")
    section = text.split("### The bar at 16 and 64 bits: fashion_mnist at 50 labels/class")[1].split("###")[0]
    assert "fashion_mnist, 16 bits." in section and "fashion_mnist, 64 bits." in section
    assert "**best baseline**" in row(section, "csq") and "0.852×" in row(section, "coophash")  # 0.52 / 0.61
    assert "| yes" in row(section, "coophash") and "| 500 |" not in section  # only the fewest labels/class
    assert section.rstrip().endswith("Not run yet: 50 labels/class.")  # nothing at 64 bits


def test_markers_respected_and_idempotent(tmp_path, capsys):
    results = write(tmp_path / "results", bar_runs())
    doc = tmp_path / "RESULTS.md"
    doc.write_text(PROSE_BEFORE + "old tables\n" + PROSE_AFTER, encoding="utf-8")
    argv = [results, "--only", "--doc", str(doc), "--out", str(tmp_path / "png"), "--no-plots"]
    make_results_doc.main(argv)
    first = doc.read_bytes()
    text = first.decode()
    assert text.startswith(PROSE_BEFORE) and text.endswith(PROSE_AFTER) and "old tables" not in text
    assert "### The bar: fashion_mnist at 50 and 500 labels/class, 32 bits" in text
    assert "](png/pr_fashion_mnist_L50_K32.png)" in text  # linked relative to the doc
    make_results_doc.main(argv)
    assert doc.read_bytes() == first

    no_markers = tmp_path / "PLAIN.md"
    no_markers.write_text("just prose\n", encoding="utf-8")
    capsys.readouterr()
    make_results_doc.main([results, "--only", "--doc", str(no_markers), "--out", str(tmp_path / "png"), "--no-plots"])
    out, err = capsys.readouterr()
    assert no_markers.read_text(encoding="utf-8") == "just prose\n"
    assert "### Retrieval" in out and "<!-- tables -->" in err


def test_plots_written_and_reproducible(tmp_path):
    pytest.importorskip("matplotlib")
    curve = [{"step": s, "train_s": s / 10, "mAP@1000": 0.5 + s / 10_000} for s in (100, 200, 300)]
    runs = bar_runs() + [run(r["method"], r["seed"], r["clean"]["mAP@1000"] + 0.05, lpc=500) for r in bar_runs()]
    runs += [run("coophash", 5, 0.8, alone=True, map_curve=curve), run("csq", 5, 0.7, map_curve=curve)]
    runs += [run("orthohash", 0, 0.7, lpc=20, tag="equal_time", map_curve=curve)]  # a long run's curve alone
    runs += [run("coophash", 0, 0.7, lpc=10, tag=T.LONG, map_curve=curve)]  # so is a long CoopHash run's
    runs += [run("csq", 0, 0.7, lpc=30, tag="augment", map_curve=curve)]  # another experiment: no curve plot
    results = write(tmp_path / "results", runs)
    out = tmp_path / "png"
    argv = [results, "--only", "--stdout", "--out", str(out)]
    make_results_doc.main(argv)
    names = sorted(os.listdir(out))
    assert names == [
        "curve_fashion_mnist_L10_K32.png",
        "curve_fashion_mnist_L20_K32.png",
        "curve_fashion_mnist_L50_K32.png",
        "map_vs_labels_fashion_mnist_K32.png",
        "pr_fashion_mnist_L500_K32.png",
        "pr_fashion_mnist_L50_K32.png",
    ]
    first = {n: (out / n).read_bytes() for n in names}
    make_results_doc.main(argv)
    assert {n: (out / n).read_bytes() for n in names} == first


def test_plots_draw_configurations_not_their_ablations_or_switches(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import results_plots as P

    few = "coophash:fewlabels"
    runs = bar_runs() + [run("csq", s, 0.6, lpc=10) for s in range(3)] + [run(few, s, 0.65, lpc=10) for s in range(3)]
    runs += [run(few, s, 0.74, ablation_of=None, switch_of=None) for s in range(3)]
    runs += [run(few + "/no_energy_head", 0, 0.75, ablation_of=few), run(few + "+jem", 0, 0.76, switch_of=few)]
    runs += [run("coophash:semi/no_pseudo_labels", 0, 0.70)]  # an old ablation JSON without `ablation_of`
    runs, _ = T.load_runs([write(tmp_path / "r", runs)])
    g, color = T.groups(runs), {m: "red" for m in {r["method"] for r in runs}}

    def legend(fig):
        texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        plt.close(fig)
        return texts

    # the ablation and the switches have their own tables; the plots compare configurations
    assert legend(P._labels(plt, g, ("fashion_mnist", 32), color)) == [
        "best baseline",
        "coophash",
        few,
        "coophash:one",
        "coophash:paper",
    ]
    assert [t.split(",")[0] for t in legend(P._pr(plt, g, ("fashion_mnist", 50, 32), color))] == [
        "csq (best baseline)",
        "coophash",
        few,
        "coophash:one",
        "coophash:paper",
    ]


def test_plots_the_doc_no_longer_links_are_removed(tmp_path):
    results = write(tmp_path / "results", bar_runs())
    doc, out = tmp_path / "RESULTS.md", tmp_path / "png"
    doc.write_text(PROSE_BEFORE + PROSE_AFTER, encoding="utf-8")
    out.mkdir()
    for name in ["pr_digits_L20_K32.png", "pr_fashion_mnist_L50_K32.png", "contact_sheet.png"]:
        (out / name).write_bytes(b"png")
    make_results_doc.main([results, "--only", "--doc", str(doc), "--out", str(out), "--no-plots"])
    # the stale plot of runs that are gone is removed; the linked one and files not ours stay
    assert sorted(os.listdir(out)) == ["contact_sheet.png", "pr_fashion_mnist_L50_K32.png"]


def test_readme_short_table_between_its_markers(tmp_path):
    runs = bar_runs() + [run("csq", s, 0.7, ood_mixed={"mAP@1000": 0.5 + s / 100}) for s in (7, 8)]
    runs += [run("coophash/no_energy_head", s, 0.8, ablation_of="coophash") for s in range(3)]
    results = write(tmp_path / "results", runs)
    doc, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    doc.write_text(PROSE_BEFORE + PROSE_AFTER, encoding="utf-8")
    before, after = "# Tool\n\n<!-- results-summary -->\n", "<!-- /results-summary -->\n\nWhat it buys.\n"
    readme.write_text(before + "| stale |\n" + after, encoding="utf-8")
    argv = [results, "--only", "--doc", str(doc), "--readme", str(readme), "--out", str(tmp_path), "--no-plots"]
    make_results_doc.main(argv)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith(before) and text.endswith(after) and "stale" not in text
    # csq: seeds 0-2 at 0.70/0.71/0.72 and 7-8 at 0.70 -> mean 0.706; OOD only on seeds 7-8 -> 0.575
    assert row(text, "csq").split(" | ")[1:5] == ["0,1,2,7,8", "0.706 ± 0.009", "0.656 ± 0.009", "0.575 ± 0.007"]
    assert "coophash:one" not in text  # one seed: the row stays in RESULTS.md, not in the README
    assert "no_energy_head" not in text and "`coophash`" in text  # so do ablations
    make_results_doc.main(argv)
    assert readme.read_text(encoding="utf-8") == text


def test_step_time_table_reports_only_a_run_that_was_alone(tmp_path):
    path = tmp_path / "steps.json"
    res = {
        "methods": {"csq": {"train_step_s": 0.1}, "coophash": {"train_step_s": 1.2, "parts_s": {"langevin": 0.9}}},
        "batch": 64,
        "image_shape": [28, 28, 1],
        "cpus": 2,
        "other_cores": 0.9,
        "alone": False,
    }
    path.write_text(json.dumps(res))
    text = T.step_time_table(str(path))
    assert "not measured alone" in text and "1200" not in text
    path.write_text(json.dumps(dict(res, alone=True, other_cores=0.02)))
    text = T.step_time_table(str(path))
    assert "| `coophash` | 1200 | 12.0× | langevin 900 |" in text and "| `csq` | 100 | 1.0× |" in text
    assert "2 cores of an unrecorded CPU" in text
    path.write_text(json.dumps(dict(res, alone=True, other_cores=0.02, cpu="AMD EPYC")))
    assert "2 cores of AMD EPYC" in T.step_time_table(str(path))
    runs, _ = T.load_runs([write(tmp_path / "r", bar_runs())])
    summary = T.summary_table(runs, "fashion_mnist", 50, 32, str(path))
    assert (
        "| ms/step (alone, AMD EPYC) |" in summary
        and "| `csq` | 0,1,2 | 0.710 ± 0.010 | 0.660 ± 0.010 | — | 100 |" in summary
    )
    assert "No `missing.json` yet" in T.step_time_table(str(tmp_path / "missing.json"))
    # another CPU's times, kept beside the file by bench_train_step.py --unless-same-cpu, follow it
    assert T.step_time_tables(str(path)) == T.step_time_table(str(path))
    (tmp_path / "steps_Intel_Xeon.json").write_text(json.dumps(dict(res, alone=True, cpu="Intel Xeon")))
    both = T.step_time_tables(str(path))
    assert (
        both.index("2 cores of AMD EPYC")
        < both.index("another CPU (`steps_Intel_Xeon.json`)")
        < both.index("2 cores of Intel Xeon")
    )


def test_relevant_share_is_the_brute_force_share_of_relevant_items(tmp_path):
    """The chance line under each retrieval table: the PR curve's last precision (every item retrieved)
    equals the mean share of the database that shares a label with a query, counted by hand."""
    from coophash_keras.metrics import retrieval_metrics

    rng = np.random.default_rng(0)
    q_labels = (rng.random((30, 5)) < 0.4).astype(np.float32)
    db_labels = (rng.random((200, 5)) < 0.4).astype(np.float32)
    q_labels[:, 0] = 1.0  # every query has a label
    codes = lambda n: np.where(rng.random((n, 8)) < 0.5, -1.0, 1.0)  # noqa: E731
    metrics = retrieval_metrics(codes(30), q_labels, codes(200), db_labels)
    by_hand = np.mean([[float(np.any(q * d)) for d in db_labels] for q in q_labels])
    r = run("csq", 0, 0.9, bits=8)
    r["clean"]["pr_curve"] = metrics["pr_curve"]
    assert T.relevant_share([r]) == pytest.approx(by_hand)
    assert T.relevant_share([run("csq", 0, 0.9, clean={"mAP@1000": 0.9})]) is None  # no PR curve: no line
    runs, _ = T.load_runs([write(tmp_path / "r", [r, run("dpn", 0, 0.8, bits=8)])])
    text = T.retrieval_tables(runs)
    share = np.mean([by_hand, 0.8 - 0.5 * 8 / 9])  # the second run's synthetic curve ends at 0.8 - 0.5 k/(k+1)
    assert f"A random ranking scores about {share:.3f} here" in text


def test_rerun_keeps_the_old_untagged_baselines_beside_the_new_folders_tagged_runs():
    """The re-run's comparison set: old untagged runs of a method without a generator stay even when
    the new folder holds tagged runs of it (equal_time, corrupt_train20), so those compare with them;
    an untagged new run replaces them; old generator runs never come in."""
    old_base = run("orthohash:fixmatch", 0, 0.77, model="orthohash")
    old_timed = run("orthohash:fixmatch", 0, 0.78, tag="equal_time", model="orthohash")
    old_coop = run("coophash:fewlabels", 0, 0.76, model="coophash")
    new = [
        run("coophash:fewlabels", 0, 0.78, model="coophash"),
        run("orthohash:fixmatch", 0, 0.79, tag="equal_time", model="orthohash"),
    ]
    kept = T.rerun_runs(new, [old_base, old_timed, old_coop], "fashion_mnist")
    assert old_base in kept and old_timed not in kept and old_coop not in kept
    assert all(r in kept for r in new)
    redone = new + [run("orthohash:fixmatch", 0, 0.8, model="orthohash")]
    assert old_base not in T.rerun_runs(redone, [old_base], "fashion_mnist")


def diagnosed(method, seed, spread, fd_raw, fd_revised, tag=""):
    diagnostics = {
        "spread_ratio": {"mean": spread, "min": spread - 0.1},
        "class_consistency": {"generated": 0.9, "revised": 0.91, "reference_accuracy": 0.886},
        "frechet": {"generated": fd_raw, "revised": fd_revised, "real": 0.2},
        "latent_real": {"active_units": 32},
        "latent_revised": {"z_recovery_r2": 0.03},
    }
    return run(method, seed, 0.78, tag=tag, model="coophash", generator_diagnostics=diagnostics)


def test_generator_table_gives_a_tagged_switch_its_own_row():
    """A switch's samples (tag nll1) are reported beside, not mixed into, the configuration's."""
    runs = [diagnosed("coophash:fewlabels", s, 0.70, 7.0, 7.1) for s in range(3)]
    runs += [diagnosed("coophash:fewlabels", s, 0.80, 5.0, 4.0, tag="nll1") for s in range(3)]
    rows = [line for line in T.generator_table(runs).splitlines() if "`coophash:fewlabels`" in line]
    assert len(rows) == 2
    untagged, tagged = sorted(rows, key=lambda line: "tag `nll1`" in line)
    assert "tag" not in untagged and "7.00" in untagged and "7.10" in untagged and "0.70" in untagged
    assert "tag `nll1`" in tagged and "5.00" in tagged and "4.00" in tagged and "0.80" in tagged


def test_generator_fix_table_pairs_each_rerun_with_its_own_old_seeds():
    """A method re-run on the working generator sits beside its old runs of the same cell, seed by
    seed; a method without old runs, or old runs of another cell, gives no row."""
    old = [
        run("coophash:fewlabels", s, m, model="coophash", config={"generator_latent": "inferred"})
        for s, m in enumerate([0.70, 0.72, 0.74])
    ]
    old.append(run("coophash:fewlabels", 0, 0.5, bits=64, model="coophash"))
    new = [
        run("coophash:fewlabels", s, m, model="coophash", config={"generator_latent": "taught"})
        for s, m in enumerate([0.75, 0.76, 0.80])
    ]
    new.append(run("coophash:paper", 0, 0.6, model="coophash"))
    text = T.generator_fix_table(new, old)
    rows = [line for line in text.splitlines() if line.startswith("| fashion_mnist")]
    assert len(rows) == 1 and "`coophash:fewlabels`" in rows[0] and "inferred → taught" in rows[0]
    assert "+0.050 / +0.040 / +0.060" in rows[0]  # the changes in seed order
    assert "+0.0500" in rows[0]  # the mean change, 0.770 - 0.720
    assert T.generator_fix_table(new[3:], old) == "No method re-run yet beside its old runs."
