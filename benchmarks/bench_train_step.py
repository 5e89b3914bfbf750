"""Uncontended train-step time of every method, and CoopHash's step split into its parts.

Run it ALONE on the machine (no test suite, no other benchmark): it measures the CPU time other
processes took meanwhile (benchmarks/alone.py) and records it. Each method trains on the same batch (random 28x28 Fashion-MNIST-sized images, the
config's defaults, batch 64, with a batch of the unlabeled pool for the methods that use one);
the figure is the median of `--repeats` timed steps after two warm-up steps. CoopHash's parts
(generator forward, T Langevin gradient passes, descriptor update, generator update) are timed
the same way; step / sum of parts near 1 means the step adds little beyond its parts.

    python benchmarks/bench_train_step.py --methods code_classifier csq orthohash dpn dshgan coophash \\
        coophash:semi --json results/train_step_times.json
"""

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from alone import AloneProbe, cpu_name  # noqa: E402

from coophash_keras.config import CoopHashConfig  # noqa: E402
from coophash_keras.io import atomic_write_json  # noqa: E402
from coophash_keras.registry import model_class  # noqa: E402
from coophash_keras.variants import resolve_method  # noqa: E402


def timeit(fn, repeats):
    for _ in range(2):  # trace + warm up
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def coophash_parts(model, batch, repeats):
    """Median seconds of each piece of CoopHash.train_step on `batch`."""
    seed = tf.constant([1, 2], tf.int32)
    pairs = model.generate_contrastive_pairs(batch.labels, seed)
    revised, _ = model.revise_pairs(pairs, seed)
    parts = {
        "generator_forward": tf.function(lambda: model.generate_contrastive_pairs(batch.labels, seed).positive),
        "langevin": tf.function(lambda: model.revise_pairs(pairs, seed)[0].positive),
        "descriptor_update": tf.function(
            lambda: model.guarded_update("descriptor", lambda: model.descriptor_losses(batch, revised))[1]
        ),
        "generator_update": tf.function(
            lambda: model.guarded_update("generator", lambda: model.generator_losses(revised, seed))[1]
        ),
    }
    return {name: timeit(fn, repeats) for name, fn in parts.items()}


def set_aside_other_cpu(path, cpu, methods=()):
    """Before step times of `methods` are measured into `path` on `cpu`: None when `path` already
    holds this CPU's times of all of them, measured alone (nothing to measure); else `path`, after
    another CPU's times were copied beside it as `<name>_<that CPU>.json` (RESULTS.md quotes both)."""
    if not os.path.exists(path):
        return path
    try:
        with open(path) as fh:
            record = json.load(fh)
        previous = record.get("cpu")
    except (OSError, ValueError, AttributeError) as err:
        raise SystemExit(f"{path}: not a step-time file this script wrote ({err}); move it aside first") from None
    if previous == cpu:  # shared times, or too few methods, are measured again, not kept
        return None if record.get("alone") and set(methods) <= set(record.get("methods") or {}) else path
    slug = re.sub(r"[^A-Za-z0-9]+", "_", previous or "unrecorded_cpu").strip("_")
    stem, ext = os.path.splitext(path)
    shutil.copyfile(path, f"{stem}_{slug}{ext}")
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["code_classifier", "csq", "orthohash", "dpn", "dshgan", "coophash"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--image-shape", type=int, nargs=3, default=[28, 28, 1])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--unless-same-cpu",
        action="store_true",
        help="measure only when --json lacks this CPU's times of --methods, measured alone; another CPU's "
        "times are kept beside it, named after their CPU",
    )
    a = p.parse_args()
    if a.unless_same_cpu:
        if not a.json:
            p.error("--unless-same-cpu needs --json")
        cpu = cpu_name()
        if set_aside_other_cpu(a.json, cpu, a.methods) is None:
            print(f"{a.json} already holds these methods' step times, measured alone on {cpu}: nothing to measure")
            return
    rng = np.random.default_rng(0)
    probe = AloneProbe()
    results = {}
    for method in a.methods:
        base = CoopHashConfig(image_shape=tuple(a.image_shape), num_classes=10, num_bits=32, batch_size=a.batch)
        name, changes = resolve_method(method, base)
        cfg = base.replace(**changes)
        cls = model_class(name)
        model = cls(cfg)
        model.compile()
        images = tf.constant(rng.integers(0, 256, (a.batch, *a.image_shape)).astype(np.uint8))
        labels = tf.constant(rng.integers(0, 10, a.batch))
        data = (images, labels)
        if cls.uses_unlabeled(cfg):
            unlabeled = rng.integers(0, 256, (a.batch * cfg.unlabeled_batch_ratio, *a.image_shape)).astype(np.uint8)
            data = (images, labels, tf.constant(unlabeled))
        row = {"train_step_s": timeit(tf.function(lambda m=model, d=data: m.train_step(d)), a.repeats)}
        if name == "coophash":
            row["parts_s"] = coophash_parts(model, model.unpack(data), a.repeats)
            row["step_over_sum_of_parts"] = row["train_step_s"] / sum(row["parts_s"].values())
        results[method] = row
        print(f"{method:>24s}: {1e3 * row['train_step_s']:8.1f} ms/step", flush=True)
        for part, seconds in row.get("parts_s", {}).items():
            print(f"{'':>24s}  {part:>18s} {1e3 * seconds:8.1f} ms")
    out = {
        "methods": results,
        "batch": a.batch,
        "image_shape": a.image_shape,
        **probe.result(),  # alone, other_cores, load_average
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_name(),  # protocol.py --equal-time-of uses these times only on the same CPU
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(f"other processes used {out['other_cores']} cores: {'alone' if out['alone'] else 'SHARED: do not report'}")
    if a.json:
        atomic_write_json(a.json, out)


if __name__ == "__main__":
    main()
