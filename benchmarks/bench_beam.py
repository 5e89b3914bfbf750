"""Throughput of `coophash beam-encode` on Beam's local runner with 2 worker processes, divided by
that of `coophash index build` on the same files, the same model and the same machine (issue 38
wants >= 0.7).

    flock /tmp/coophash-cpu.lock .venv/bin/python benchmarks/bench_beam.py [--files 20000] [--size 64]
        [--bits 64] [--batch-size 256] [--repeats 1] [--work /tmp/bench_beam] [--json results/bench_beam.json]

It makes `--files` distinct JPEGs of `--size`x`--size`x3 (smooth random images) and one CoopHash
(default conv base, fitted one epoch on 64 random images: the speed does not depend on the
weights), saved and exported. Each command runs as a subprocess, timed from its start to its end
(Python and TensorFlow start-up, model load, Beam's worker start-up included), so images/s is what a
user waits for. `index build --dataset images:DIR` decodes every file with PIL in memory first,
then encodes (batch 256); beam-encode hands the bytes to the SavedModel's `hash_image_bytes`.
Both orders alternate over `--repeats`. It records whether it ran alone (benchmarks/alone.py).
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from alone import AloneProbe, cpu_name  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_images(folder, count, size, seed=0):
    """`count` distinct smooth random RGB JPEGs (quality 90), named 000000.jpg..."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = os.path.join(folder, f"{i:06d}.jpg")
        if os.path.exists(path):
            continue
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(path, quality=90)


def make_model(work, size, bits):
    """model.keras and its export models/bench/1 (made once per work folder)."""
    model_file = os.path.join(work, "model.keras")
    export_dir = os.path.join(work, "models", "bench", "1")
    if os.path.exists(export_dir):
        return model_file, export_dir
    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.data import from_arrays
    from coophash_keras.export import export_saved_model
    from coophash_keras.io import save_model

    rng = np.random.default_rng(0)
    data = from_arrays(rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8), np.arange(64) % 10)
    model = CoopHash(CoopHashConfig(image_shape=(size, size, 3), num_classes=10, num_bits=bits))
    model.compile()
    model.fit(data.as_dataset(32, drop_remainder=True), epochs=1, verbose=0)
    save_model(model, model_file)
    export_saved_model(model_file, os.path.join(work, "models"), "bench", version=1, warmup=False)
    return model_file, export_dir


def timed(cmd):
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return wall, out.stdout


def compare_codes(index_file, shard_prefix):
    """How many files got the same code from both (PIL decodes JPEGs for index build, TensorFlow for
    the signature: their IDCTs may differ by one level in a few pixels)."""
    import glob

    import pyarrow.parquet as pq

    from coophash_keras.index import HammingIndex

    index = HammingIndex.load(index_file)
    by_path = dict(zip(index.paths_for(index.ids), map(bytes, index.packed_codes())))
    same = total = 0
    for shard in glob.glob(shard_prefix + "-*.parquet"):
        table = pq.read_table(shard)
        for path, code in zip(table.column("path").to_pylist(), table.column("code").to_pylist()):
            total += 1
            same += by_path.get(path) == code
    return {"files": total, "same_code": same, "index_files": len(by_path)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--work", default="/tmp/bench_beam")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    images = os.path.join(args.work, f"jpg{args.size}")
    make_images(images, args.files, args.size)
    model_file, export_dir = make_model(args.work, args.size, args.bits)
    cli = [sys.executable, "-m", "coophash_keras.cli"]
    index_cmd = [*cli, "index", "build", "--model", model_file, "--dataset", f"images:{images}"]
    index_cmd += ["--out", os.path.join(args.work, "bench.idx"), "--overwrite"]
    beam_cmd = [*cli, "beam-encode", "--input", os.path.join(images, "*.jpg"), "--model"]
    beam_cmd += [export_dir, "--output", os.path.join(args.work, "shards", "c"), "--batch-size", str(args.batch_size)]
    beam_cmd += ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]

    probe = AloneProbe()
    runs = {"index_build": [], "beam_encode": []}
    for r in range(args.repeats):
        order = ["index_build", "beam_encode"] if r % 2 == 0 else ["beam_encode", "index_build"]
        for name in order:
            shutil.rmtree(os.path.join(args.work, "shards"), ignore_errors=True)  # no shards of a previous run
            wall, stdout = timed(index_cmd if name == "index_build" else beam_cmd)
            record = {
                "wall_s": round(wall, 2),
                "images_per_s": round(args.files / wall, 1),
                "stdout": (stdout.strip().splitlines() or [""])[-1],
            }
            if name == "index_build":  # the encode alone, as index build reports it (after decoding)
                found = re.search(r"in ([0-9.]+)s ->", stdout)
                record["encode_s"] = float(found.group(1)) if found else None
            else:
                found = re.search(r"encoded (\d+) files, skipped (\d+)", stdout)
                record["encoded"], record["skipped"] = (
                    (int(found.group(1)), int(found.group(2))) if found else (None, None)
                )
            runs[name].append(record)
            print(name, {k: v for k, v in record.items() if k != "stdout"}, flush=True)
    alone = probe.result()
    agreement = compare_codes(os.path.join(args.work, "bench.idx"), os.path.join(args.work, "shards", "c"))

    best = {name: max(r["images_per_s"] for r in rs) for name, rs in runs.items()}
    result = {
        "benchmark": "beam-encode (local runner, 2 worker processes) vs index build, images/s end to end",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join([sys.executable, *sys.argv]),
        "index_build_command": " ".join(index_cmd),
        "beam_encode_command": " ".join(beam_cmd),
        "files": args.files,
        "image_shape": [args.size, args.size, 3],
        "bits": args.bits,
        "runs": runs,
        "best_images_per_s": best,
        "ratio_beam_over_index_build": round(best["beam_encode"] / best["index_build"], 3),
        "target_ratio": 0.7,
        "codes_equal_to_index_build": agreement,
        "alone": alone,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
