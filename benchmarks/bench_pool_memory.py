"""Peak memory of `coophash train --unlabeled images:DIR` against the size of the pool: the pool is
streamed from its files (coophash_keras/data/pool.py), so the peak should stay flat from a pool of
6,000 files to one of 60,000 (at 96x96x3, 1.6 GB of pixels decoded as uint8).

    python benchmarks/bench_pool_memory.py --files 6000 60000 --size 96 --steps 30 \\
        --workdir /tmp/pool_memory --out results/pool_memory.json

Makes, under --workdir, a labelled folder (10 classes x 20 images) and one pool per --files count.
A pool's files are hard links to 500 distinct JPEGs (so 60,000 files take a few MB of disk; each
is still a file of its own, listed, probed and decoded on its own). Then each pool size trains in
a fresh process (`code_classifier:fixmatch`, --steps optimizer steps of batch 32 + 32 pool images),
one after the other, and reports that process's peak resident memory (getrusage ru_maxrss). The
work directory is deleted at the end unless --keep.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DISTINCT = 500


def _image(rng, size):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2)), np.cos(5 * y * rng.uniform(0.5, 2)), x * y], -1)
    return np.clip((base + 1) * 120 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def make_data(workdir, counts, size):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    labelled = os.path.join(workdir, "labelled")
    for k in range(10):
        os.makedirs(os.path.join(labelled, f"c{k}"), exist_ok=True)
        for i in range(20):
            Image.fromarray(_image(rng, size)).save(os.path.join(labelled, f"c{k}", f"{i}.png"))
    distinct = os.path.join(workdir, "distinct")
    os.makedirs(distinct, exist_ok=True)
    sources = []
    for i in range(DISTINCT):
        path = os.path.join(distinct, f"{i}.jpg")
        Image.fromarray(_image(rng, size)).save(path, quality=90)
        sources.append(path)
    pools = {}
    for n in counts:
        pool = os.path.join(workdir, f"pool_{n}")
        for i in range(n):
            sub = os.path.join(pool, f"{i // 1000:03d}")  # 1,000 files a folder
            os.makedirs(sub, exist_ok=True)
            target = os.path.join(sub, f"{i:06d}.jpg")
            try:
                os.link(sources[i % DISTINCT], target)
            except OSError:
                shutil.copyfile(sources[i % DISTINCT], target)
        pools[n] = pool
    return labelled, pools


def child(args):
    """One training run in this process; prints its peak RSS as JSON."""
    from coophash_keras.cli import main

    start = time.time()
    code = main(args)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"exit": code, "peak_rss_mib": peak_kib / 1024, "seconds": time.time() - start}))


def main():
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, nargs="+", default=[6000, 60000])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--workdir", default="/tmp/pool_memory")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    t = time.time()
    labelled, pools = make_data(a.workdir, a.files, a.size)
    print(f"made the data in {time.time() - t:.0f}s", flush=True)
    rows = []
    try:
        for n in a.files:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "train", "--dataset", f"folder:{labelled}"]
            cmd += ["--unlabeled", f"images:{pools[n]}", "--method", "code_classifier:fixmatch"]
            cmd += ["--image-size", f"{a.size},{a.size}", "--channels", "3", "--bits", "32", "--batch-size", "32"]
            cmd += ["--query-per-class", "2", "--epochs", "1", "--steps-per-epoch", str(a.steps), "--progress", "none"]
            cmd += ["--run-dir", os.path.join(a.workdir, f"run_{n}")]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if out.returncode or not lines:
                sys.exit(f"the run with {n} files failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
            r = json.loads(lines[-1])
            r.update(files=n, decoded_pool_mib=n * a.size * a.size * 3 / 2**20)
            rows.append(r)
            print(
                f"{n} pool files ({r['decoded_pool_mib']:.0f} MiB if decoded): peak RSS {r['peak_rss_mib']:.0f} MiB, "
                f"{r['seconds']:.0f}s",
                flush=True,
            )
    finally:
        if not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)
    result = {
        "size": a.size,
        "steps": a.steps,
        "method": "code_classifier:fixmatch",
        "runs": rows,
        "command": "python " + " ".join(sys.argv),
    }
    if a.out:
        from coophash_keras.io import atomic_write_json

        atomic_write_json(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
