"""The retrieval benchmark: every method trained by the library's run function
(coophash_keras.runs.train_run, as `coophash train` does), then evaluated on one split. One JSON
per run, written atomically; `--skip-existing` resumes a table.

Datasets and splits (per seed):
  fashion_mnist    1,000 queries = 100 per class from the test file; database = the other 69,000
                   images; labelled = `--labels-per-class` per class from the train file; the rest
                   of the train file is the unlabelled pool (methods that use one get batches of it).
                   `--labels-per-class 0` with a label-free method (itq, lsh): fitted on the whole
                   train file, labels ignored, in closed form (`--steps` does not apply).
  digits           20 queries per class; database = the other digits; labelled from the rest.
  fashion_mosaics  multi-label 2x2 mosaics (scripts/make_fashion_mosaics.py): 1,000 test-file
                   queries; database = every other mosaic; `--labelled` train-file mosaics
                   labelled (default 5,000), the rest the pool; relevance = one shared label.

Every method gets the same base network, batch, optimizer and number of optimizer steps
(`--steps`). Timing: each JSON records the training wall time, ms/step from the epochs after the
first (tracing excluded), and the CPU time other processes took meanwhile (benchmarks/alone.py):
a run that shared the cores is marked `"alone": false`, and its timing must not be reported (mAP is unaffected).

    python benchmarks/protocol.py --methods code_classifier csq coophash --labels-per-class 50 \\
        --bits 32 --seeds 0 1 2 --steps 1500 --out results/fashion --skip-existing
    python benchmarks/protocol.py --dataset digits ... --out results/digits
    python benchmarks/protocol.py --dataset fashion_mosaics --bits 32 --out results/mosaics ...
    python benchmarks/protocol.py ... --ood --corrupted --recover      # the robustness evaluations
    python benchmarks/protocol.py --methods orthohash --steps 1000 --equal-time-of coophash:fewlabels ...
        # equal wall-clock: orthohash trains for the time coophash:fewlabels takes for 1,000 steps
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from alone import AloneProbe, cpu_name  # noqa: E402
from results_tables import load_step_times  # noqa: E402

from coophash_keras.cli.common import parse_overrides  # noqa: E402
from coophash_keras.config import CoopHashConfig  # noqa: E402
from coophash_keras.data import load_dataset, load_digits, load_fashion_mnist, retrieval_split  # noqa: E402
from coophash_keras.data.split import random_split  # noqa: E402
from coophash_keras.diagnostics import generator_diagnostics, has_generator  # noqa: E402
from coophash_keras.io import atomic_write_json  # noqa: E402
from coophash_keras.metrics import retrieval_metrics  # noqa: E402
from coophash_keras.runs import RunSpec, train_run  # noqa: E402
from coophash_keras.variants import ablation_of, method_names, resolve_method, switch_of  # noqa: E402


def machine():
    import tensorflow as tf

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": bool(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }


def load(name, data_dir=None):
    """(data, query candidates, train candidates, queries per class or None)."""
    if name == "digits":
        data = load_digits()
        return data, None, None, 20
    if name == "fashion_mnist":
        data = load_fashion_mnist(split="all")
    elif name == "fashion_mosaics":
        path = os.path.join(data_dir or "data", "fashion_mosaics.npz")
        if not os.path.exists(path):
            from coophash_keras.data.mosaics import fashion_mosaics, save_mosaics

            save_mosaics(fashion_mosaics(load_fashion_mnist(split="all")), path)
        data = load_dataset(name, data_dir)
    else:
        raise ValueError(f"unknown dataset {name!r}")
    source = data.extras["source_split"]  # 0 = train file, 1 = test file
    return data, np.flatnonzero(source == 1), np.flatnonzero(source == 0), None if data.multi_label else 100


def make_split(a, data, test_idx, train_idx, query_per_class, labels_per_class, seed):
    if data.multi_label:
        return random_split(len(data), 1000, a.labelled, seed, test_idx, train_idx)
    return retrieval_split(
        data.labels,
        query_per_class,
        labels_per_class,
        database="rest",
        seed=seed,
        query_candidates=test_idx,
        train_candidates=train_idx,
    )


def with_corrupted_training_images(data, split, fraction, seed):
    """(data, count): `data` with round(fraction x |labelled training images|) of them corrupted once,
    each by a kind drawn from the corruption functions (corrupt(..., 'mixed')), seeded per seed; the
    pool, the queries and the database stay clean (they are other indices, or read from `data` itself
    at evaluation). fraction 0: `data` unchanged."""
    import dataclasses

    from coophash_keras.data.corruptions import corrupt

    if not fraction:
        return data, 0
    train = np.asarray(split.train)
    chosen = np.sort(
        np.random.default_rng(40_000 + seed).choice(train, int(round(fraction * len(train))), replace=False)
    )
    images = data.images.copy()
    images[chosen] = corrupt(images[chosen], "mixed", seed=50_000 + seed)
    return dataclasses.replace(data, images=images), int(len(chosen))


def clean_metrics(model, q_img, q_lab, db_codes, db_lab, pr_curve=False):
    out = retrieval_metrics(model.encode(q_img), q_lab, db_codes, db_lab, topk=(1000,), pr_curve=pr_curve)
    return {k: out[k] for k in ["mAP@1000", "mAP@all", "P@1000"] + (["pr_curve"] if pr_curve else [])}


def robustness(a, model, split, data, db_codes, seed, cache):
    """OOD (queries and database shifted), corrupted queries against the clean database, and
    with `--recover` the same after CoopHash.recover."""
    from coophash_keras.data.corruptions import CORRUPTIONS, corrupt

    q_img, q_lab = data.images[split.query], data.labels[split.query]
    db_lab = data.labels[split.database]
    result = {}
    if a.ood:
        if cache.get("seed") != seed:
            db_img = data.images[split.database]
            cache.update(
                seed=seed, q=corrupt(q_img, "mixed", 10_000 + seed), db=corrupt(db_img, "mixed", 20_000 + seed)
            )
        result["ood_mixed"] = clean_metrics(model, cache["q"], q_lab, model.encode(cache["db"]), db_lab)
    if a.corrupted or a.recover:
        rows = {}
        for kind in ("clean",) + CORRUPTIONS:
            q = q_img if kind == "clean" else corrupt(q_img, kind, seed=30_000 + seed)
            row = {} if kind == "clean" else {"mAP@1000": clean_metrics(model, q, q_lab, db_codes, db_lab)["mAP@1000"]}
            if a.recover and hasattr(model, "recover"):
                row["recovered_mAP@1000"] = clean_metrics(model, model.recover(q), q_lab, db_codes, db_lab)["mAP@1000"]
            if row:
                rows[kind] = row
        result["corrupted_queries"] = rows
    return result


class MapCurve(keras.callbacks.Callback):
    """mAP@1000 on a fixed 10,000-image database subsample every epoch (= every `--log-every`
    steps), with the optimizer step and the training seconds so far (evaluation time left out)."""

    def __init__(self, q_img, q_lab, db_img, db_lab, steps_per_epoch):
        super().__init__()
        self.q_img, self.q_lab, self.db_img, self.db_lab = q_img, q_lab, db_img, db_lab
        self.steps_per_epoch, self.points, self.seconds = steps_per_epoch, [], 0.0
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._start
        m = retrieval_metrics(
            self.model.encode(self.q_img), self.q_lab, self.model.encode(self.db_img), self.db_lab, topk=(1000,)
        )
        self.points.append(
            {"step": (epoch + 1) * self.steps_per_epoch, "train_s": self.seconds, "mAP@1000": m["mAP@1000"]}
        )


def timing(run_dir, steps_per_epoch):
    """ms/step from ProgressLog's epoch times, leaving out the first epoch (tracing)."""
    with open(os.path.join(run_dir, "progress.jsonl")) as fh:
        times = [json.loads(line)["time"] for line in fh if line.strip()]
    if len(times) < 3:
        return None
    return 1000 * float(np.median(np.diff(times[1:]))) / steps_per_epoch


def epoch_length(steps, log_every):
    """Steps per keras epoch: the largest divisor of `steps` not above `log_every`, so that exactly
    `steps` are trained (steps // log_every epochs would silently drop the remainder). A ValueError
    when that divisor is under half of `log_every` (too many short epochs: pick other steps)."""
    if steps <= log_every:
        return steps
    d = next(d for d in range(log_every, 0, -1) if steps % d == 0)
    if d < log_every / 2:
        raise ValueError(
            f"--steps {steps} has no divisor between {log_every // 2} and {log_every} (--log-every): "
            f"use a multiple of {log_every}, e.g. {round(steps / log_every) * log_every}"
        )
    return d


def equal_time_steps(steps, of, method, step_times, cpu=None):
    """The optimizer steps `method` takes in the time `of` takes for `steps`, from the step times
    that benchmarks/bench_train_step.py measured alone (`step_times`, its JSON), rounded to 100.
    `cpu`: this machine's; the step times must come from the same CPU (the ratio moves with it)."""
    if not step_times.get("alone"):
        raise ValueError("the step times were not measured alone: run benchmarks/bench_train_step.py alone first")
    if cpu is not None and step_times.get("cpu") != cpu:
        raise ValueError(
            f"the step times were measured on {step_times.get('cpu') or 'an unrecorded CPU'!r} and this machine is "
            f"{cpu!r}: equal wall-clock needs both on one machine; run benchmarks/bench_train_step.py alone here first"
        )
    times = step_times["methods"]
    for m in (of, method):
        if m not in times:
            raise ValueError(f"no step time for {m!r} in the step-time file (it has {sorted(times)})")
    return max(100, int(round(steps * times[of]["train_step_s"] / times[method]["train_step_s"], -2)))


def run_one(a, data, test_idx, train_idx, query_per_class, method, labels_per_class, bits, seed, steps, cache):
    split = make_split(a, data, test_idx, train_idx, query_per_class, labels_per_class, seed)
    batch = min(a.batch, len(split.train)) or a.batch  # 0 labels/class: a label-free method (itq, lsh)
    overrides = parse_overrides(a.set)
    base = CoopHashConfig(
        image_shape=data.images.shape[1:],
        num_classes=data.num_classes,
        multi_label=data.multi_label,
        num_bits=bits,
        seed=seed,
        batch_size=batch,
        **overrides,
    )
    model_name, changes = resolve_method(method, base)
    steps_per_epoch = epoch_length(steps, a.log_every)
    run_dir = os.path.join(
        a.run_root,
        f"{a.dataset}_{method.replace(':', '-').replace('/', '-')}_L{labels_per_class}_K{bits}_s{seed}"
        + (f"_{a.tag}" if a.tag else ""),  # a tagged run never clears the untagged run's directory
    )
    # --backup: a run longer than one sitting resumes from its last epoch (coophash_keras.backup)
    backup_dir = run_dir + "_backup" if a.backup else None
    if not (backup_dir and os.path.isdir(backup_dir)):
        shutil.rmtree(run_dir, ignore_errors=True)
    spec = RunSpec(
        run_dir=run_dir,
        dataset=a.dataset,
        method=method,  # names the model; its variant applies before --set, as in `coophash train`
        bits=bits,
        epochs=steps // steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch,
        seed=seed,
        overrides=overrides,
        verbose=0,
        backup_dir=backup_dir,
    )
    q_img, q_lab = data.images[split.query], data.labels[split.query]
    extra = []
    if a.curve:
        sub = np.sort(
            np.random.default_rng(seed).choice(split.database, min(10_000, len(split.database)), replace=False)
        )
        extra.append(MapCurve(q_img, q_lab, data.images[sub], data.labels[sub], steps_per_epoch))
    probe = AloneProbe()
    train_data, corrupted = with_corrupted_training_images(data, split, a.corrupt_train, seed)
    result = train_run(spec, data=train_data, split=split, extra_callbacks=extra)
    alone = probe.result()
    model = result.model
    resumed_from_epoch = result.resumed_from_epoch
    if resumed_from_epoch:  # the probe saw only the last sitting, and the epoch times span a restart
        alone["alone"] = False

    t1 = time.perf_counter()
    db_codes = model.encode(data.images[split.database])
    encode_s = time.perf_counter() - t1
    out = {"clean": clean_metrics(model, q_img, q_lab, db_codes, data.labels[split.database], pr_curve=True)}
    out.update(robustness(a, model, split, data, db_codes, seed, cache))
    eval_s = time.perf_counter() - t1
    if a.diagnose and has_generator(model):  # what the generator makes (coophash_keras.diagnostics)
        report = generator_diagnostics(model, data, seed=seed)
        out["generator_diagnostics"] = {k: v for k, v in report.items() if k not in ("model", "data")}
    return {
        "method": method,
        "model": model_name,
        "ablation_of": ablation_of(method),  # the full configuration this run switches one part off in
        "switch_of": switch_of(method),  # the configuration this run adds one switch to
        # what this run asked for, so a table can name a switch even when its reference predates the field
        "variant_changes": changes,
        "set_overrides": overrides,
        "dataset": a.dataset,
        "labels_per_class": labels_per_class,
        "bits": bits,
        "seed": seed,
        # a method fitted in closed form (itq, lsh) takes no optimizer step
        "steps": 0 if model.fitted_in_closed_form else spec.epochs * steps_per_epoch,
        "equal_time_of": a.equal_time_of,  # trained for the time this method takes for --steps, or None
        "batch": batch,
        "train_images": len(split.train),
        "corrupted_train_images": corrupted,  # labelled images corrupted once before training (--corrupt-train)
        "unlabeled_images": len(split.unlabeled),
        "queries": len(split.query),
        "database": len(split.database),
        "config": model.config.to_dict(),
        "train_s": result.train_seconds,
        "ms_per_step": None if resumed_from_epoch else timing(run_dir, steps_per_epoch),
        "resumed_from_epoch": resumed_from_epoch,  # --backup: trained in sittings; its timing is not reported
        "database_encode_s": encode_s,
        "eval_s": eval_s,
        **alone,  # whether other processes took CPU time while it trained (benchmarks/alone.py)
        "final_train_logs": {k: float(v[-1]) for k, v in result.history.items()},
        "map_curve": extra[0].points if extra else None,
        "command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **out,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["fashion_mnist", "digits", "fashion_mosaics"], default="fashion_mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--methods", nargs="+", required=True, help=f"from {method_names()} (+ '/ABLATION')")
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[50])
    p.add_argument("--labelled", type=int, default=5000, help="labelled mosaics (fashion_mosaics)")
    p.add_argument("--bits", type=int, nargs="+", default=[32])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per method (the same for all)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(
        "--log-every",
        type=int,
        default=250,
        help="steps per keras 'epoch' (logging, timing, curve); the largest divisor of --steps up to this",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (JSON or text)")
    p.add_argument(
        "--equal-time-of",
        metavar="METHOD",
        help="train each method for the time METHOD takes for --steps (steps from --step-times); tag equal_time",
    )
    p.add_argument("--step-times", default="results/bench_train_step.json", help="bench_train_step.py's JSON")
    p.add_argument("--tag", default=None, help="suffix of the JSON names (default: equal_time with --equal-time-of)")
    p.add_argument("--ood", action="store_true", help="also OOD retrieval (queries and database corrupted)")
    p.add_argument("--corrupted", action="store_true", help="also corrupted queries against the clean database")
    p.add_argument("--recover", action="store_true", help="also corrupted queries after CoopHash.recover")
    p.add_argument(
        "--diagnose", action="store_true", help="also the generator's diagnostics (CoopHash, DSH-GAN): spread, FD, ..."
    )
    p.add_argument(
        "--corrupt-train",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="corrupt this share of the labelled training images once (a kind drawn per image); pool, queries "
        "and database stay clean; name it with --tag",
    )
    p.add_argument("--curve", action="store_true", help="mAP@1000 (10k-image database) after every --log-every steps")
    p.add_argument("--out", default="results/fashion")
    p.add_argument("--run-root", default="runs/bench", help="where the run directories go (not committed)")
    p.add_argument("--skip-existing", action="store_true", help="keep runs whose JSON already exists")
    p.add_argument(
        "--backup",
        action="store_true",
        help="back up every epoch beside the run directory (RUN_backup) and resume from it when the same run "
        "is started again, for runs longer than one sitting; a resumed run's timing is not reported",
    )
    a = p.parse_args()
    if a.tag is None:
        a.tag = "equal_time" if a.equal_time_of else ""
    try:  # fail fast: a typo in a method name, a missing step time, steps that do not split into epochs
        for m in [*a.methods, *([a.equal_time_of] if a.equal_time_of else [])]:
            resolve_method(m, CoopHashConfig())
        steps_of = {m: a.steps for m in a.methods}
        if a.equal_time_of:
            step_times = load_step_times(a.step_times)
            if step_times is None:
                raise ValueError(f"no step times at {a.step_times}: run benchmarks/bench_train_step.py alone first")
            steps_of = {m: equal_time_steps(a.steps, a.equal_time_of, m, step_times, cpu_name()) for m in a.methods}
            print("equal wall-clock with", a.equal_time_of, "at", a.steps, "steps:", steps_of, flush=True)
        for m in a.methods:
            epoch_length(steps_of[m], a.log_every)
        if not 0.0 <= a.corrupt_train < 1.0:
            raise ValueError(f"--corrupt-train is a fraction in [0, 1), got {a.corrupt_train}")
        if a.corrupt_train and not a.tag:
            raise ValueError("--corrupt-train needs a --tag, so its runs never replace the clean runs")
    except ValueError as e:
        p.error(str(e))
    os.makedirs(a.out, exist_ok=True)
    data, test_idx, train_idx, query_per_class = load(a.dataset, a.data_dir)
    labels_grid = [None] if data.multi_label else a.labels_per_class
    cache = {}
    for seed in a.seeds:
        for labels_per_class in labels_grid:
            for bits in a.bits:
                for method in a.methods:
                    lpc = a.labelled if data.multi_label else labels_per_class
                    name = f"{a.dataset}_{method.replace(':', '-').replace('/', '-')}_L{lpc}_K{bits}_s{seed}{a.tag and '_' + a.tag}"
                    path = os.path.join(a.out, name + ".json")
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
                        steps_of[method],
                        cache,
                    )
                    r["labels_per_class"] = lpc
                    r["tag"] = a.tag
                    atomic_write_json(path, r)
                    ood = f" OOD {r['ood_mixed']['mAP@1000']:.4f}" if "ood_mixed" in r else ""
                    ms = f"{r['ms_per_step']:.0f} ms/step" if r["ms_per_step"] else "-"
                    print(
                        f"{name}: mAP@1000 {r['clean']['mAP@1000']:.4f} mAP@all {r['clean']['mAP@all']:.4f}{ood} "
                        f"train {r['train_s']:.0f}s ({ms}{'' if r['alone'] else ', shared cores'}) eval {r['eval_s']:.0f}s",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
