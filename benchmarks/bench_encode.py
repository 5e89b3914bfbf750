"""Encode throughput (images/s) of the conv base vs pretrained backbones: raw uint8 images in, codes out,
through the same computation as the exported `serving_default` (normalise, network, sign), as one
tf.function on a fixed batch. Weights are random (weights=None: the speed does not depend on them).

    python benchmarks/bench_encode.py [--size 96] [--channels 3] [--batch 64] [--repeats 20] [--rounds 3]
                                      [--backbones none,MobileNetV3Small] [--json out.json]

Each round times `--repeats` calls after two warm-up calls and keeps the median; the best round is
reported (on a shared machine the best is the least disturbed). It prints and records whether it
ran alone (benchmarks/alone.py: the CPU time other processes took meanwhile); report only runs
that did.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from alone import AloneProbe  # noqa: E402

from coophash_keras import CoopHashConfig  # noqa: E402
from coophash_keras.baselines.code_classifier import CodeClassifier  # noqa: E402
from coophash_keras.preprocessing import normalize_images  # noqa: E402


def encode_function(backbone, size, channels, bits=32):
    cfg = CoopHashConfig(image_shape=(size, size, channels), num_bits=bits, backbone=backbone, backbone_weights="none")
    network = CodeClassifier(cfg).hash_network
    network.build()

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, channels], tf.uint8)])
    def encode(images):
        return tf.where(network.relaxed_codes(normalize_images(images)) >= 0, 1, -1)

    params = sum(int(np.prod(v.shape)) for v in network.weights)
    return encode, params


def best_throughput(fn, images, repeats, rounds):
    fn(images)
    fn(images)
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(images).numpy()
            times.append(time.perf_counter() - t)
        medians.append(float(np.median(times)))
    return len(images) / min(medians), [len(images) / m for m in medians]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--channels", type=int, default=3, choices=[1, 3])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backbones", default="none,MobileNetV3Small", help="comma-separated; 'none' = the conv base")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (a.batch, a.size, a.size, a.channels), np.uint8))
    print(f"{a.size}x{a.size}x{a.channels}, batch {a.batch}, {os.cpu_count()} CPUs")
    probe = AloneProbe()
    rows = []
    for backbone in a.backbones.split(","):
        fn, params = encode_function(backbone, a.size, a.channels)
        best, per_round = best_throughput(fn, images, a.repeats, a.rounds)
        name = "conv base" if backbone == "none" else backbone
        rows.append(dict(base=name, params=params, images_per_s=best, rounds=per_round))
        print(
            f"{name:>18}: {best:8.1f} images/s  (rounds: {', '.join(f'{r:.1f}' for r in per_round)}; {params:,} params)"
        )
    alone = probe.result()
    print(
        f"other processes used {alone['other_cores']} cores: {'alone' if alone['alone'] else 'SHARED: do not report'}"
    )
    if a.json:
        with open(a.json, "w") as fh:
            record = dict(args=vars(a), machine=platform.platform(), cpus=os.cpu_count(), rows=rows, **alone)
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
