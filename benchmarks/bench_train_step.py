"""Time one CoopHash train step and each of its parts; print step time / sum of parts.

Parts (each a tf.function on the same batch, timed the same way as the whole step):
  generator forward (x+ and x- from one z), T Langevin gradient passes, descriptor update,
  generator update. A ratio near 1 means the step adds little beyond its parts.

    python benchmarks/bench_train_step.py [--batch 64] [--steps 10] [--repeats 50] [--json out.json]
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from coophash_keras import CoopHash, CoopHashConfig  # noqa: E402
from coophash_keras.data import load_digits  # noqa: E402
from coophash_keras.preprocessing import normalize_images  # noqa: E402


def timeit(fn, repeats):
    fn()  # trace + warm up
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        tf.nest.map_structure(lambda v: v.numpy() if hasattr(v, "numpy") else v, out)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="Langevin steps T (default: config)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    cfg = CoopHashConfig()
    if a.steps is not None:
        cfg = cfg.replace(langevin_steps=a.steps)
    digits = load_digits()
    images = tf.constant(digits.images[: a.batch])
    labels = tf.constant(digits.labels[: a.batch])
    model = CoopHash(cfg)
    model.compile()

    x = normalize_images(images)
    c_pos = model.labels_to_multi_hot(labels)
    seed = tf.constant([1, 2], tf.int32)
    x_pos, x_neg, c_neg, _ = model.generate_contrastive_pairs(c_pos, seed)
    revised, _ = model.langevin_revise(tf.concat([x_pos, x_neg], 0), tf.concat([c_pos, c_neg], 0), seed)
    r_pos, r_neg = tf.split(revised, 2)
    c_syn = tf.concat([c_pos, c_neg], 0)
    ok = tf.constant(True)

    parts = {
        "generator_forward": tf.function(lambda: model.generate_contrastive_pairs(c_pos, seed)),
        "langevin": tf.function(lambda: model.langevin_revise(tf.concat([x_pos, x_neg], 0), c_syn, seed)),
        "descriptor_update": tf.function(lambda: model.update_descriptor(x, c_pos, r_pos, r_neg, c_neg, ok)[1]),
        "generator_update": tf.function(lambda: model.update_generator(revised, c_syn, seed, ok)[1]),
    }
    step = tf.function(lambda: model.train_step((images, labels)))
    results = {name: timeit(fn, a.repeats) for name, fn in parts.items()}
    results["train_step"] = timeit(step, a.repeats)
    total = sum(results[n] for n in parts)
    results["sum_of_parts"] = total
    results["step_over_sum_of_parts"] = results["train_step"] / total
    results.update(
        batch=a.batch,
        langevin_steps=cfg.langevin_steps,
        machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(),
        tensorflow=tf.__version__,
    )
    for k in list(parts) + ["train_step", "sum_of_parts"]:
        print(f"{k:>20s}: {results[k] * 1e3:8.2f} ms")
    print(f"{'step / sum of parts':>20s}: {results['step_over_sum_of_parts']:.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
