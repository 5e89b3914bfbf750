"""CPU per request of each server thread under batched batch-1 load: a measurement that holds up
on a shared machine (throughput does not: other jobs take the cores, but not the CPU seconds our
threads spend per request).

    python benchmarks/bench_request_cpu.py --model digits --model-base /tmp/cpu-bench [--profile out]

The server runs in this process (ModelServer with --enable_batching's parameters, the shipped
serving/config/batching.config by default; gc frozen as `coophash serve` does); 16 keep-alive
clients in processes of their own (_serving_common.run_load) send batch-1 PNG bytes as {"b64": ...}
to `hash_image_bytes`. Around each load, utime + stime of every thread in /proc/self/task gives
its CPU; threads are grouped by their Python name (the event loop "rest", the batch threads, the
REST workers, this main thread) and the rest (TensorFlow's and gRPC's native threads) as "native".
Prints ms per request per group for each of `--repeats` loads and their medians, as JSON, with
the event loop's and the batch threads' voluntary context switches per request (waits for the GIL,
a lock or I/O: a measure of the hand-offs that the CPU time does not show).
`--profile PREFIX` then runs one more load under py-spy (sampling this process, only the thread
holding the GIL) and writes PREFIX.txt, the event loop thread's collapsed stacks, and a summary by function.
The export is made once under --model-base (the same two exports as bench_batching.py)."""

import argparse
import collections
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time

from _serving_common import REPO, median_time, run_load

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu():
    """{native thread id: (user, system) CPU seconds} of every thread of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        out[int(tid)] = (int(fields[11]) / TICK, int(fields[12]) / TICK)
    return out


def thread_switches():
    """{native thread id: voluntary context switches}: each is a wait (for the GIL, a lock, I/O)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as fh:
                out[int(tid)] = next(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt"))
        except (FileNotFoundError, StopIteration):
            continue
    return out


def group_of(tid, names, batch_prefix):
    name = names.get(tid)
    if name is None:
        return "native"
    if name == "rest":
        return "loop"
    if name.startswith(batch_prefix):
        return "batch"
    if name.startswith("rest-worker"):
        return "workers"
    if name == "MainThread":
        return "bench_main"
    return "py_other"


def measure(server, bodies, clients, requests, batch_prefix):
    names = {t.native_id: t.name for t in threading.enumerate()}
    batcher = server.batcher
    batches0, rows0, busy0 = batcher.batches_run, batcher.rows_run, batcher.batch_seconds
    before, switches0 = thread_cpu(), thread_switches()
    r = run_load(server.url, bodies, clients, requests // clients, check='"predictions"')
    after, switches = thread_cpu(), thread_switches()
    batches, rows, busy = batcher.batches_run - batches0, batcher.rows_run - rows0, batcher.batch_seconds - busy0
    names.update({t.native_id: t.name for t in threading.enumerate()})
    n = r["requests"]
    groups, system, waits = collections.Counter(), collections.Counter(), collections.Counter()
    for tid, (user, sys_) in after.items():
        user0, sys0 = before.get(tid, (0.0, 0.0))
        group = group_of(tid, names, batch_prefix)
        groups[group] += user - user0 + sys_ - sys0
        system[group] += sys_ - sys0
        waits[group] += switches.get(tid, 0) - switches0.get(tid, 0)
    row = {g: groups[g] / n * 1e3 for g in ("loop", "batch", "workers", "native", "bench_main", "py_other")}
    row["server_total"] = sum(v for k, v in row.items() if k != "bench_main")
    row["loop_system"] = system["loop"] / n * 1e3  # of "loop": time in the kernel (socket calls, epoll)
    row["batch_system"] = system["batch"] / n * 1e3
    row["loop_waits"] = waits["loop"] / n  # voluntary context switches per request: GIL hand-offs
    row["batch_waits"] = waits["batch"] / n
    row["rows_per_batch"] = rows / max(batches, 1)  # per-batch costs spread over this many requests
    # is the model kept waiting? the share of the load's time the batch threads spent running batches
    # (1.0 = always in a call, per thread), and what one batch took there (compare: the call alone)
    row["batch_threads_busy"] = busy / (r["wall_s"] * batcher.params.num_batch_threads)
    row["ms_per_batch"] = busy / max(batches, 1) * 1e3
    row["errors"] = r["errors"]
    row["requests_per_s"] = r["requests_per_s"]  # not to be trusted on a shared machine
    row["client_cpu_ms_per_request"] = r["client_cpu_ms_per_request"]
    if r["errors"]:
        row["first_errors"] = r["first_errors"]
    return row


def profile(prefix, url, bodies, clients, requests):
    """One more load under py-spy; the event loop thread's stacks -> PREFIX.txt + a summary."""
    raw = prefix + ".raw"
    spy = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "--pid",
            str(os.getpid()),
            "--rate",
            "2000",
            "--threads",
            "--gil",  # only the thread holding the GIL: Python's own CPU, not time spent runnable or in syscalls
            "--format",
            "raw",
            "--output",
            raw,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    run_load(url, bodies, clients, requests // clients, check='"predictions"')
    spy.send_signal(2)
    spy.wait(timeout=60)
    loop_tid = next(t.native_id for t in threading.enumerate() if t.name == "rest")
    own, total = collections.Counter(), 0
    stacks = []
    with open(raw) as fh:
        for line in fh:
            stack, count = line.rstrip("\n").rsplit(" ", 1)
            frames = stack.split(";")
            if f"{loop_tid}" not in frames[0] and "'rest'" not in frames[0]:
                continue
            count = int(count)
            total += count
            stacks.append(line)
            seen = set()
            for f in frames[1:]:
                key = f.split(" (")[0] + " " + f.split("/")[-1].split(":")[0] if "(" in f else f
                if key not in seen:
                    own[key] += count
                    seen.add(key)
    with open(prefix + ".txt", "w") as fh:
        fh.write(f"# event loop thread: {total} samples; inclusive share by function\n")
        for key, c in own.most_common(80):
            fh.write(f"{100 * c / max(total, 1):5.1f}%  {key}\n")
        fh.write("\n# collapsed stacks\n")
        fh.writelines(stacks)
    return prefix + ".txt"


def call_alone(model_base, encoded, rows):
    """Median wall ms of `hash_image_bytes` called directly (no load) at the row counts around the
    loads' mean rows per batch, through the server's own Servable (its traced signature)."""
    import numpy as np

    from coophash_keras.serving.registry import Servable

    # version 1: what export_models writes (bench_batching.py's direct calls read the same)
    signature = Servable("coophash", 1, os.path.join(model_base, "coophash", "1")).signature("hash_image_bytes")
    mean_rows = statistics.median(r["rows_per_batch"] for r in rows)
    out = {}
    for n in sorted({max(1, round(mean_rows) + d) for d in (-1, 0, 1)}):
        x = {"image_bytes": np.array(encoded[:n], dtype=object)}
        out[n] = round(median_time(lambda x=x: signature.call(x), 40) * 1e3, 3)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="digits", choices=["digits", "mobilenetv3small"])
    p.add_argument("--model-base", required=True, help="a folder: the export is made there once, then reused")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batching-config", default=os.path.join(REPO, "serving", "config", "batching.config"))
    p.add_argument("--profile", default=None, help="path prefix for a py-spy profile of the event loop")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from alone import AloneProbe, cpu_name
    from bench_batching import b64_body, export_models, png

    workdir = os.path.join(a.model_base, a.model)
    marker = os.path.join(workdir, "models")
    if os.path.isdir(marker):
        import numpy as np

        from coophash_keras.data import load_digits

        images = load_digits().images
        if a.model == "mobilenetv3small":
            images = np.repeat(np.kron(images, np.ones((1, 4, 4, 1), np.uint8)), 3, axis=-1)
        base = marker
    else:
        base, images = export_models(a.model_base, [a.model])[a.model]
    bodies = [b64_body(images[i : i + 1]) for i in range(len(images))]

    from coophash_keras.serving.batching_config import read_batching_parameters
    from coophash_keras.serving.server import ModelServer

    params = read_batching_parameters(a.batching_config)
    probe = AloneProbe()
    gc.collect()
    gc.freeze()  # as `coophash serve` does
    with ModelServer(base, port=0, grpc_port=None, batching_parameters=params) as server:
        run_load(server.url, bodies, a.clients, 20 * a.clients, check='"predictions"')  # warm-up
        rows = []
        for i in range(a.repeats):
            row = measure(server, bodies, a.clients, a.requests, params.thread_pool_name)
            rows.append(row)
            print(f"run {i}: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
        result = {
            "model": a.model,
            "requests": a.requests,
            "clients": a.clients,
            "median_ms_per_request": {k: round(statistics.median(r[k] for r in rows), 4) for k in keys},
            "runs": rows,
        }
        if a.profile:
            result["profile"] = profile(a.profile, server.url, bodies, a.clients, a.requests)
        # the merged call's size under load, run alone on the idle server: how much slower it was there
        result["alone_ms_per_call_by_rows"] = call_alone(base, [png(im) for im in images[:16]], rows)
    result.update(command=" ".join([os.path.basename(sys.executable), *sys.argv]), cpu=cpu_name(), **probe.result())
    print(json.dumps(result["median_ms_per_request"], indent=1), json.dumps(result["alone_ms_per_call_by_rows"]))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
