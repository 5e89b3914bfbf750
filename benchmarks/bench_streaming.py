"""Issue 38's must-shows for the streamed data path and `coophash index build` over many files.
Each mode is a script run alone (inside the shared lock), writing a JSON that names the machine
(lscpu's model name), the command, and whether the run had the machine to itself (alone.py).

    flock /tmp/coophash-cpu.lock python benchmarks/bench_streaming.py MODE [options] --out results/X.json

Modes:
    badinput  10,000 files (--files) at 32x32 with unreadable, truncated and zero-byte files among
              them: `index build` exits 0, names each bad file in one line and counts them; a folder
              with no image is one line, exit 2; `index add` with another model is one line, exit 2,
              and leaves the index byte for byte.
    kills     `index build` SIGKILLed at --kills random moments (rerun after each) gives the same
              index file, byte for byte, as an uninterrupted build; so does `index add` killed once.
    speed     images/s of `index build` against a plain tf.data decode (tf.io.decode_jpeg, resize)
              + model.predict loop on the same files, model and batch size; and decoding's share of
              each (a pass that only decodes).
    memory    peak RSS of `index build` and of `evaluate` (--database of the files) on each --files
              count at --size (224: 224x224x3), in fresh processes; the files are hard links to
              --distinct JPEGs.
    million   --files (1,000,000) hard links at --size 32: build time, peak RSS, then search q/s.

Generated images go under --workdir (default /tmp/coophash_streaming), never into the repository;
it is deleted at the end unless --keep. The model is an untrained small CoopHash at the size
(base_filters 8): the same network for every compared run, which is what a ratio needs.
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from alone import AloneProbe  # noqa: E402

BATCH = 256  # coophash_keras.encoding.ENCODE_BATCH


def machine():
    name = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), name)
    except OSError:
        pass
    return {"cpu": name, "cores": os.cpu_count()}


def _image(rng, size):
    import numpy as np

    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x * rng.uniform(0.5, 2)), np.cos(5 * y * rng.uniform(0.5, 2)), x * y], -1)
    return np.clip((base + 1) * 120 + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def distinct_jpegs(folder, count, size, seed=0):
    import numpy as np
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"{i:05d}.jpg")
        if not os.path.exists(path):
            Image.fromarray(_image(rng, size)).save(path, quality=90)
        paths.append(path)
    return paths


def linked_folder(folder, sources, count):
    """`count` files, 1,000 a subfolder, hard links cycling through `sources`."""
    for i in range(count):
        sub = os.path.join(folder, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        target = os.path.join(sub, f"{i:07d}.jpg")
        if not os.path.exists(target):
            try:
                os.link(sources[i % len(sources)], target)
            except OSError:
                shutil.copyfile(sources[i % len(sources)], target)
    return folder


def small_model(path, size, seed=0, kind="coophash"):
    """An untrained small model at size x size x 3, saved to `path` (model.keras): CoopHash
    (base_filters 8), or LSH (a projection of the raw pixels: nearly free, so that a run measures
    the data path, not the network)."""
    if os.path.exists(path):
        return path
    import keras
    import numpy as np

    from coophash_keras import CoopHashConfig
    from coophash_keras.io import save_model
    from coophash_keras.registry import model_class

    keras.utils.set_random_seed(seed)
    cfg = CoopHashConfig(
        image_shape=(size, size, 3), num_classes=10, num_bits=64, base_filters=8, feature_dim=32, latent_dim=8
    )
    model = model_class(kind)(cfg)
    model.encode(np.zeros((1, size, size, 3), np.uint8))
    if kind == "lsh":  # a random projection (as LSH's fit draws it), so that the codes are not all equal
        d = size * size * 3
        model.set_projection(np.zeros(d), np.random.default_rng(seed).standard_normal((d, 64)))
    save_model(model, path)
    return path


def coophash(*args, timeout=None):
    """Run the CLI in a fresh process; (exit code, stdout, stderr, peak RSS MiB of that process)."""
    code = (
        "import json, resource, sys\n"
        "sys.argv[0] = 'coophash'  # the console command: TensorFlow's start-up lines hidden as there\n"
        "from coophash_keras.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print(json.dumps({'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
    lines = out.stderr.strip().splitlines()
    peak = json.loads(lines[-1])["peak_rss_mib"] if lines and lines[-1].startswith("{") else None
    stderr = "\n".join(lines[:-1]) if peak is not None else out.stderr
    return out.returncode, out.stdout, stderr, peak


def _bytes(path):
    with open(path, "rb") as fh:
        return fh.read()


def _cmd_line(args):
    return "python benchmarks/bench_streaming.py " + " ".join(args)


# ---------------------------------------------------------------------------- modes


def bad_input(a, work):
    size = 32
    sources = distinct_jpegs(os.path.join(work, "distinct"), 500, size)
    folder = linked_folder(os.path.join(work, "files"), sources, a.files)
    bad = {}
    for i in range(10):
        p = os.path.join(folder, "bad", f"unreadable{i}.jpg")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as fh:
            fh.write(b"this is not a JPEG")
        bad[p] = "unrecognised image data"
        p = os.path.join(folder, "bad", f"zero{i}.jpg")
        open(p, "wb").close()
        bad[p] = "empty file"
        p = os.path.join(folder, "bad", f"truncated{i}.jpg")
        with open(sources[i], "rb") as src, open(p, "wb") as fh:
            data = src.read()
            fh.write(data[: len(data) // 2])
        bad[p] = "truncated"
    model = small_model(os.path.join(work, "model32.keras"), size)
    out = os.path.join(work, "bad.idx")
    code, stdout, stderr, _ = coophash(
        "index", "build", "--model", model, "--dataset", f"images:{folder}", "--out", out
    )
    lines = stderr.strip().splitlines()
    named = {p: sum(p in line for line in lines) for p in bad}
    total = a.files + len(bad)
    summary = f"skipped {len(bad)} of {total} files that could not be decoded"
    result = {
        "files": total,
        "bad_files": len(bad),
        "build_exit": code,
        "each_bad_file_named_once": all(v == 1 for v in named.values()),
        "reasons_right": all(any(f"{p} ({r})" in line for line in lines) for p, r in bad.items()),
        "count_line": next((line for line in lines if summary in line), None),
        "stderr_lines": len(lines),
        "indexed_line": stdout.strip().splitlines()[-1] if stdout.strip() else None,
    }
    empty = os.path.join(work, "empty")
    os.makedirs(empty, exist_ok=True)
    code, _, stderr, _ = coophash(
        "index", "build", "--model", model, "--dataset", f"images:{empty}", "--out", os.path.join(work, "e.idx")
    )
    result["empty_folder"] = {"exit": code, "lines": stderr.strip().splitlines()}
    other = small_model(os.path.join(work, "other32.keras"), size, seed=1)
    before = _bytes(out)
    code, _, stderr, _ = coophash("index", "add", "--index", out, "--model", other, sources[0])
    result["add_with_another_model"] = {
        "exit": code,
        "lines": stderr.strip().splitlines(),
        "index_untouched": _bytes(out) == before,
    }
    result["passed"] = bool(
        result["build_exit"] == 0
        and result["each_bad_file_named_once"]
        and result["reasons_right"]
        and result["count_line"]
        and result["stderr_lines"] == len(bad) + 1
        and result["empty_folder"]["exit"] == 2
        and len(result["empty_folder"]["lines"]) == 1
        and result["add_with_another_model"]["exit"] == 2
        and len(result["add_with_another_model"]["lines"]) == 1
        and result["add_with_another_model"]["index_untouched"]
    )
    return result


def _run_killed(cmd, delay):
    """Start `cmd` (a coophash command line), SIGKILL it after `delay` s; True if it was killed."""
    proc = subprocess.Popen([sys.executable, "-m", "coophash_keras.cli", *cmd], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def kills(a, work):
    size = 32
    sources = distinct_jpegs(os.path.join(work, "distinct"), 500, size)
    folder = linked_folder(os.path.join(work, "files"), sources, a.files)
    model = small_model(os.path.join(work, "model32.keras"), size)
    chunk = ["--chunk-rows", str(a.chunk_rows)]
    reference = os.path.join(work, "reference.idx")
    start = time.time()
    code, _, err, _ = coophash(
        "index", "build", "--model", model, "--dataset", f"images:{folder}", "--out", reference, *chunk
    )
    if code:
        sys.exit(f"the uninterrupted build failed: {err}")
    full = time.time() - start
    rng = random.Random(a.seed)
    target = os.path.join(work, "killed.idx")
    cmd = [
        "index",
        "build",
        "--model",
        model,
        "--dataset",
        f"images:{folder}",
        "--out",
        target,
        *chunk,
        "--progress",
        "none",
    ]
    trials = []
    for _ in range(a.kills):  # each a fresh build, killed at a random moment of its run, then rerun to the end
        shutil.rmtree(target + ".partial", ignore_errors=True)
        if os.path.exists(target):
            os.remove(target)
        delay = rng.uniform(1.0, full)
        killed = _run_killed(cmd, delay)
        existed = os.path.exists(target)
        partial = target + ".partial"
        chunks = len([f for f in os.listdir(partial) if f.startswith("codes-")]) if os.path.isdir(partial) else None
        code, _, err, _ = coophash(*cmd)
        identical = code == 0 and _bytes(target) == _bytes(reference)
        trials.append({"delay_s": round(delay, 2), "killed": killed, "chunks_done_at_kill": chunks,
                       "index_written_before_kill": existed, "rerun_exit": code,
                       "identical": identical})  # fmt: skip
    same = all(t["identical"] for t in trials)
    from coophash_keras.index import HammingIndex

    HammingIndex.load(target)  # the checksums verify
    # index add killed once: half the folder indexed, the rest added; killed mid-add, rerun
    half = os.path.join(work, "half.idx")
    add_ref = os.path.join(work, "added_ref.idx")
    first = sorted(os.path.join(folder, "0000", f) for f in os.listdir(os.path.join(folder, "0000")))
    coophash("index", "build", "--model", model, "--images", *first, "--out", half)
    shutil.copyfile(half, add_ref)
    start = time.time()
    coophash("index", "add", "--index", add_ref, "--model", model, "--dataset", f"images:{folder}")
    add_time = time.time() - start
    add_cmd = ["index", "add", "--index", half, "--model", model, "--dataset", f"images:{folder}", "--progress", "none"]
    add_delay = rng.uniform(2.0, add_time)
    add_killed = _run_killed(add_cmd, add_delay)
    readable = True
    try:
        HammingIndex.load(half)  # the old index (or the new one) is readable right after the kill
    except Exception:
        readable = False
    code, out, _, _ = coophash(*add_cmd)
    add_same = code == 0 and _bytes(half) == _bytes(add_ref)
    return {
        "files": a.files,
        "chunk_rows": a.chunk_rows,
        "uninterrupted_build_s": round(full, 1),
        "kills": trials,
        "identical_after_kills": same,
        "index_add": {
            "delay_s": round(add_delay, 2),
            "killed": add_killed,
            "readable_after_kill": readable,
            "identical_after_rerun": add_same,
            "rerun_output": out.strip(),
        },  # fmt: skip
        "passed": bool(same and add_same and readable and all(t["killed"] for t in trials)),
    }


def speed(a, work):
    import numpy as np
    import tensorflow as tf

    from coophash_keras.io import load_model

    size = a.size
    sources = distinct_jpegs(os.path.join(work, f"distinct{size}"), min(a.distinct, a.files), size)
    folder = linked_folder(os.path.join(work, f"files{size}"), sources, a.files)
    model_path = small_model(os.path.join(work, f"model{size}.keras"), size)
    from coophash_keras.data import load_dataset

    data = load_dataset(f"images:{folder}", image_size=(size, size), channels=3)
    paths = data.extras["paths"]

    def plain_decode(path):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, (size, size))), 0, 255), tf.uint8)

    plain = tf.data.Dataset.from_tensor_slices(paths).map(plain_decode, num_parallel_calls=tf.data.AUTOTUNE)
    plain = plain.batch(BATCH).prefetch(tf.data.AUTOTUNE)
    model = load_model(model_path)
    model.predict(plain.take(1), verbose=0)  # warm up (tracing) outside the timing
    t = time.time()
    codes = model.predict(plain, verbose=0)
    plain_s = time.time() - t
    t = time.time()
    for _ in plain:
        pass
    plain_decode_s = time.time() - t
    t = time.time()
    for _ in data.as_dataset(BATCH, rows=True):
        pass
    ours_decode_s = time.time() - t
    out = os.path.join(work, "speed.idx")
    t = time.time()
    code, stdout, err, _ = coophash(
        "index",
        "build",
        "--model",
        model_path,
        "--dataset",
        f"images:{folder}",
        "--out",
        out,
        "--overwrite",
        "--progress",
        "none",
    )
    build_wall = time.time() - t
    if code:
        sys.exit(err)
    reported = float(stdout.strip().split("(")[-1].split(" images/s")[0])  # the build's own images/s
    return {
        "files": a.files,
        "size": size,
        "batch": BATCH,
        "plain_loop_images_per_s": round(a.files / plain_s, 1),
        "index_build_images_per_s": reported,
        "index_build_images_per_s_process_wall": round(a.files / build_wall, 1),
        "ratio": round(reported / (a.files / plain_s), 3),
        "ratio_process_wall": round((a.files / build_wall) / (a.files / plain_s), 3),
        "decode_share_plain": round(plain_decode_s / plain_s, 3),
        "decode_share_index_build": round(ours_decode_s / (a.files / reported), 3),
        "decode_only_images_per_s": {"plain_tf": round(a.files / plain_decode_s, 1), "coophash_pil": round(a.files / ours_decode_s, 1)},
        "codes_checked": int(np.asarray(codes).shape[0]) == a.files,
        "note": "plain loop: tf.io.decode_jpeg + tf.image.resize; index build: the package's PIL decode_image "
        "(EXIF, verify, bilinear), through ImageSet.as_dataset; the process-wall ratio includes startup and listing",
    }  # fmt: skip


def memory(a, work):
    size = a.size
    sources = distinct_jpegs(os.path.join(work, f"distinct{size}"), a.distinct, size)
    model = small_model(os.path.join(work, f"model{size}_{a.model}.keras"), size, kind=a.model)
    run = os.path.join(work, "run")
    os.makedirs(run, exist_ok=True)
    shutil.copyfile(model, os.path.join(run, "model.keras"))
    with open(os.path.join(run, "run.json"), "w") as fh:
        json.dump({"dataset": "none", "seed": 0}, fh)
    labelled = os.path.join(work, "labelled")
    for k in range(10):
        linked_folder(os.path.join(labelled, f"c{k}"), sources[k * 20 : (k + 1) * 20], 20)
    rows = []
    for n in a.files:
        folder = linked_folder(os.path.join(work, "files"), sources, n)  # grows: the first n are the smaller set's
        t = time.time()
        code, out, err, build_peak = coophash(
            "index", "build", "--model", model, "--dataset", f"images:{folder}", "--out", os.path.join(work, f"m{n}.idx"),
            "--overwrite", "--progress", "none",
        )  # fmt: skip
        build_s = time.time() - t
        if code:
            sys.exit(err)
        t = time.time()
        code, out2, err, eval_peak = coophash(
            "evaluate", "--run-dir", run, "--queries", f"folder:{labelled}", "--query-per-class", "5",
            "--database", f"images:{folder}", "--output", os.path.join(work, f"metrics{n}.json"), "--progress", "none",
        )  # fmt: skip
        eval_s = time.time() - t
        if code:
            sys.exit(err)
        rows.append({"files": n, "index_build_peak_rss_mib": round(build_peak, 1), "index_build_s": round(build_s, 1),
                     "evaluate_peak_rss_mib": round(eval_peak, 1), "evaluate_s": round(eval_s, 1),
                     "pixels_if_decoded_gib": round(n * size * size * 3 / 2**30, 2)})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    first, last = rows[0], rows[-1]
    return {
        "size": size,
        "model": a.model,
        "distinct_jpegs": a.distinct,
        "runs": rows,
        "index_build_peak_ratio": round(last["index_build_peak_rss_mib"] / first["index_build_peak_rss_mib"], 3),
        "evaluate_peak_ratio": round(last["evaluate_peak_rss_mib"] / first["evaluate_peak_rss_mib"], 3),
    }


def million(a, work):
    size = a.size
    sources = distinct_jpegs(os.path.join(work, f"distinct{size}"), a.distinct, size)
    t = time.time()
    folder = linked_folder(os.path.join(work, "million"), sources, a.files[-1])
    made = time.time() - t
    model = small_model(os.path.join(work, f"model{size}.keras"), size)
    out = os.path.join(work, "million.idx")
    t = time.time()
    code, stdout, err, peak = coophash("index", "build", "--model", model, "--dataset", f"images:{folder}", "--out", out, "--overwrite", "--progress", "none")  # fmt: skip
    build_s = time.time() - t
    if code:
        sys.exit(err)
    queries = sources[:100]
    t = time.time()
    code, sout, err, search_peak = coophash("index", "search", "--index", out, "--model", model, "--k", "10", *queries)
    search_s = time.time() - t
    # the search itself, without the process start and the model load: the index over the same codes
    import numpy as np

    from coophash_keras.index import HammingIndex

    index = HammingIndex.load(out)
    q = np.asarray(index.packed_codes()[:1000])
    t = time.time()
    index.search(q, 10)
    qps = len(q) / (time.time() - t)
    return {
        "files": a.files[-1],
        "size": size,
        "made_links_s": round(made, 1),
        "build_s": round(build_s, 1),
        "build_output": stdout.strip(),
        "build_peak_rss_mib": round(peak, 1),
        "indexed": len(index),
        "search_cli_100_queries_s": round(search_s, 1),
        "search_queries_per_s": round(qps, 1),
        "search_exit": code,
    }


MODES = {"badinput": bad_input, "kills": kills, "speed": speed, "memory": memory, "million": million}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--files", type=int, nargs="+", default=None)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--distinct", type=int, default=5000)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--chunk-rows", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", choices=["coophash", "lsh"], default="coophash", help="memory: the model encoding")
    p.add_argument("--workdir", default="/tmp/coophash_streaming")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    defaults = {"badinput": [10000], "kills": [6000], "speed": [4000], "memory": [20000, 200000], "million": [1000000]}
    a.files = a.files or defaults[a.mode]
    if a.mode in ("badinput", "kills", "speed"):
        a.files = a.files[0]
    work = os.path.join(a.workdir, a.mode)
    os.makedirs(work, exist_ok=True)
    probe = AloneProbe()
    start = time.time()
    try:
        result = MODES[a.mode](a, work)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    result.update(
        mode=a.mode,
        machine=machine(),
        alone=probe.result(),
        seconds=round(time.time() - start, 1),
        command=_cmd_line(sys.argv[1:]),
        this_process_peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if a.out:
        from coophash_keras.io import atomic_write_json

        atomic_write_json(a.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
