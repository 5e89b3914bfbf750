"""Serving under load, batching off and on: what real clients send (PNG bytes as {"b64": ...} to
`hash_image_bytes`), one client with batch-64 requests, one with batch-1, and N concurrent batch-1
clients; plus where one request's time goes (raw-pixel JSON and b64 PNG). Run it alone, under the lock:

    flock /tmp/coophash-cpu.lock python benchmarks/bench_batching.py --json results/bench_batching.json

Two exports are made in a temporary directory, nothing is downloaded: an `orthohash` on a
MobileNetV3Small backbone (weights=None) at 32x32x3, and a conv-base CoopHash at 8x8x1 (digits).
Each server runs in a subprocess on loopback (`coophash serve`, with `--enable_batching
--batching_parameters_file` for "on"); the clients are threads of this process, on the same cores.
Images are the digits (blown up to 32x32x3 for the backbone), a different one per request."""

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _serving_common import REPO, start_server
from alone import AloneProbe, cpu_name

MODEL = "/v1/models/{}:predict"


def export_models(tmp, names):
    """-> {name: (model base, images uint8)} for `names` of the two exports the table reports."""
    import keras
    import tensorflow as tf

    from coophash_keras import CoopHashConfig
    from coophash_keras.data import load_digits
    from coophash_keras.export import export_saved_model
    from coophash_keras.io import save_model
    from coophash_keras.registry import model_class

    digits = load_digits()
    rgb32 = np.repeat(np.kron(digits.images, np.ones((1, 4, 4, 1), np.uint8)), 3, axis=-1)
    out = {}
    for name, cls, images, cfg in [
        (
            "mobilenetv3small",
            "orthohash",
            rgb32,
            CoopHashConfig(
                image_shape=(32, 32, 3),
                num_classes=10,
                num_bits=64,
                backbone="MobileNetV3Small",
                backbone_weights="none",
            ),
        ),
        ("digits", "coophash", digits.images, CoopHashConfig(image_shape=(8, 8, 1), num_classes=10, num_bits=32)),
    ]:
        if name not in names:
            continue
        keras.utils.set_random_seed(0)
        model = model_class(cls)(cfg)
        model.compile()
        train = tf.data.Dataset.from_tensor_slices((images[:128], digits.labels[:128])).batch(64)
        model.fit(train, epochs=1, verbose=0)  # builds it; the weights are not the point here
        path = os.path.join(tmp, f"{name}.keras")
        save_model(model, path)
        base = os.path.join(tmp, name)
        export_saved_model(path, base, "coophash")
        out[name] = (base, images)
    return out


def png(image):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="PNG")
    return buf.getvalue()


def b64_body(images):
    import base64

    instances = [{"b64": base64.b64encode(png(im)).decode()} for im in images]
    return json.dumps({"signature_name": "hash_image_bytes", "instances": instances}).encode()


def direct_rates(base, images, repeats):
    """images/s of the loaded SavedModel's signatures called in-process, batch 1 and 64."""
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(base, "coophash", "1"))
    out = {}
    for sig, key, make in [
        ("serving_default", "images", lambda b: tf.constant(images[:b])),
        ("hash_image_bytes", "image_bytes", lambda b: tf.constant([png(im) for im in images[:b]])),
    ]:
        fn = loaded.signatures[sig]
        for batch in (1, 64):
            x = make(batch)
            call = lambda fn=fn, key=key, x=x: fn(**{key: x})  # noqa: E731
            out[f"direct_{sig}_b{batch}_images_per_s"] = batch / median_time(call, repeats)
    return out


def median_time(fn, repeats):
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def cpu_seconds(pid=None):
    """User + system CPU seconds of process `pid` (default: this one) so far."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url, bodies, clients, requests, rows, server_pid=None):
    """`clients` threads, each sending `requests` bodies (keep-alive) -> images/s, latency, errors,
    and the CPU time per request of the server and of the clients (this process)."""
    host, port = url.split("//")[1].split(":")
    latencies, errors, lock = [], [], threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(cid):
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        mine, bad = [], []
        start.wait()
        for i in range(requests):
            body = bodies[(cid * requests + i) % len(bodies)]
            t = time.perf_counter()
            try:
                conn.request("POST", MODEL.format("coophash"), body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status != 200:
                    bad.append(f"{resp.status} {payload[:100]!r}")
            except Exception as exc:  # noqa: BLE001 - counted, reported
                bad.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    [t.start() for t in threads]
    cpu0 = (cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0)
    start.wait()
    t0 = time.perf_counter()
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    cpu1 = (cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0)
    lat = np.array(latencies) * 1e3
    return {
        "clients": clients,
        "requests": len(lat),
        "rows_per_request": rows,
        "errors": len(errors),
        "first_errors": errors[:3],
        "images_per_s": len(lat) * rows / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "client_cpu_ms_per_request": (cpu1[0] - cpu0[0]) / len(lat) * 1e3,
        "server_cpu_ms_per_request": (cpu1[1] - cpu0[1]) / len(lat) * 1e3 if server_pid else None,
        "server_cores_busy": (cpu1[1] - cpu0[1]) / wall if server_pid else None,
    }


def profile_request(base, body, repeats):
    """Where one REST :predict request's time goes, stage by stage, in-process (medians, ms)."""
    import asyncio

    from coophash_keras.serving.http11 import read_request, response_bytes
    from coophash_keras.serving.json_tensor import format_predict_response, load_json, parse_predict_object
    from coophash_keras.serving.registry import Servable
    from coophash_keras.serving.rest import _json

    servable = Servable("coophash", 1, os.path.join(base, "coophash", "1"))
    raw = (
        f"POST /v1/models/coophash:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.new_event_loop()

    def framing():
        async def go():
            reader = asyncio.StreamReader(limit=8192)
            reader.feed_data(raw)
            reader.feed_eof()
            return await read_request(reader, None, 1 << 30)

        return loop.run_until_complete(go())

    parsed = load_json(body)
    sig_name, inputs, row = parse_predict_object(parsed, servable.signature)
    signature = servable.signature(sig_name)
    arrays = signature.check(inputs)
    outputs = signature.call(arrays)
    payload = format_predict_response(outputs, row)
    stages = {
        "http_framing": framing,
        "json_parse": lambda: load_json(body),
        "tensor_conversion": lambda: signature.check(parse_predict_object(parsed, servable.signature)[1]),
        "model_call": lambda: signature.call(arrays),
        "response_encoding": lambda: response_bytes(
            200, "application/json", _json(format_predict_response(outputs, row))
        ),
    }
    ms = {k: median_time(fn, repeats) * 1e3 for k, fn in stages.items()}
    loop.close()
    before = {**ms, "json_parse": median_time(lambda: json.loads(body), repeats) * 1e3}  # the json module's parse
    return {
        "body_bytes": len(body),
        "response_bytes": len(_json(payload)),
        "stages_ms": ms,
        "share": {k: v / sum(ms.values()) for k, v in ms.items()},
        "stages_ms_with_json_module": before,
        "share_with_json_module": {k: v / sum(before.values()) for k, v in before.items()},
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=150, help="batch-1 requests per concurrent client")
    p.add_argument(
        "--batching-config",
        action="append",
        default=None,
        help="a batching parameters file to measure (repeatable; default serving/config/batching.config); "
        "the first one is the table's 'on'",
    )
    p.add_argument("--models", default="mobilenetv3small,digits")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    configs = a.batching_config or [os.path.join(REPO, "serving", "config", "batching.config")]
    probe = AloneProbe()
    record = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "batching_configs": {f"batching_on_{i}": Path(c).read_text() for i, c in enumerate(configs)},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        exports = export_models(tmp, a.models.split(","))
        for name in a.models.split(","):
            base, images = exports[name]
            row = direct_rates(base, images, a.repeats)
            singles = [b64_body(images[i : i + 1]) for i in range(256)]
            batch64 = [b64_body(images[i : i + 64]) for i in range(0, 256, 64)]
            raw64 = json.dumps({"instances": images[:64].tolist()}).encode()
            row["profile_b64_png_b1"] = profile_request(base, singles[0], a.repeats)
            row["profile_raw_pixels_b64"] = profile_request(base, raw64, max(5, a.repeats // 5))
            modes = [("batching_off", [])] + [
                (f"batching_on_{i}", ["--enable_batching", "--batching_parameters_file", c])
                for i, c in enumerate(configs)
            ]
            for mode, args in modes:
                log_path = os.path.join(tmp, f"{name}_{mode}.log")
                proc, url = start_server(base, args, log_path)
                try:
                    load(url, singles, 4, 10, 1)  # warm-up
                    pid = proc.pid
                    row[mode] = {
                        "rest_b64_batch64_1_client": load(url, batch64, 1, max(10, a.repeats // 2), 64, pid),
                        "rest_b64_batch1_1_client": load(url, singles, 1, a.repeats * 4, 1, pid),
                        f"rest_b64_batch1_{a.clients}_clients": load(url, singles, a.clients, a.requests, 1, pid),
                        "rest_raw_pixels_batch64_1_client": load(url, [raw64], 1, max(5, a.repeats // 5), 64, pid),
                    }
                finally:
                    proc.terminate()  # a clean stop (SIGTERM): the batcher logs its batch sizes
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                with open(log_path) as fh:
                    row[mode]["server_log_batching"] = [ln.strip() for ln in fh if "batching:" in ln]
                print(name, mode, json.dumps(row[mode], indent=1), flush=True)
            row["batching_on"] = row["batching_on_0"]
            on = row["batching_on"]
            row["concurrent_on_over_batch64_off"] = (
                on[f"rest_b64_batch1_{a.clients}_clients"]["images_per_s"]
                / row["batching_off"]["rest_b64_batch64_1_client"]["images_per_s"]
            )
            record["models"][name] = row
    record.update(probe.result())
    print(json.dumps(record, indent=2))
    if not record["alone"]:
        print(f"other processes used {record['other_cores']} cores: SHARED, do not report", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
