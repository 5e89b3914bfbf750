"""Serving under load, batching off and on: what real clients send (PNG bytes as {"b64": ...} to
`hash_image_bytes`), one client with batch-64 requests, one with batch-1, and N concurrent batch-1
clients; plus where one request's time goes (raw-pixel JSON and b64 PNG). Run it alone, under the lock:

    flock /tmp/coophash-cpu.lock python benchmarks/bench_batching.py --json results/bench_batching.json

Two exports are made in a temporary directory, nothing is downloaded: an `orthohash` on a
MobileNetV3Small backbone (weights=None) at 32x32x3, and a conv-base CoopHash at 8x8x1 (digits).
Each server runs in a subprocess on loopback (`coophash serve`, with `--enable_batching
--batching_parameters_file` for "on", and any `--server-arg`s); the clients are processes of their
own (benchmarks/_serving_common.py run_load), on the same cores, and their CPU is reported beside
the server's. Then `--rounds` interleaved rounds (every server up at once, each in turn: batch-64,
then the concurrent clients) give the goal's ratio within each round, and its median and range.
Images are the digits (blown up to 32x32x3 for the backbone), a different one per request."""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _serving_common import REPO, export_model, median_time, run_load, start_server
from alone import AloneProbe, cpu_name


def export_models(tmp, names):
    """-> {name: (model base, images uint8)} for `names` of the two exports the table reports."""
    from coophash_keras import CoopHashConfig
    from coophash_keras.data import load_digits

    digits = load_digits()
    rgb32 = np.repeat(np.kron(digits.images, np.ones((1, 4, 4, 1), np.uint8)), 3, axis=-1)
    exports = {
        "mobilenetv3small": (
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
        "digits": ("coophash", digits.images, CoopHashConfig(image_shape=(8, 8, 1), num_classes=10, num_bits=32)),
    }
    out = {}
    for name in names:
        model_name, images, cfg = exports[name]
        base = export_model(os.path.join(tmp, name), model_name, cfg, images, digits.labels, train_rows=128)
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


def call_cost_by_batch(base, images, repeats, sizes=(1, 2, 4, 8, 16, 32, 64)):
    """What one merged model call costs by its rows: the SavedModel's `hash_image_bytes` called
    in-process at each batch size -> per size the median wall ms per call and the process's CPU ms
    per image (every thread, TensorFlow's included), and the least-squares line wall = fixed +
    per_image x rows. The fixed part is what a merged batch amortises."""
    import tensorflow as tf

    fn = tf.saved_model.load(os.path.join(base, "coophash", "1")).signatures["hash_image_bytes"]
    encoded = [png(im) for im in images[: max(sizes)]]
    rows = {}
    for b in sizes:
        x = tf.constant(encoded[:b])
        fn(image_bytes=x)  # the first call at a shape also builds its kernels: not a call's cost
        cpu0 = time.process_time()
        wall = median_time(lambda x=x: fn(image_bytes=x), repeats)
        cpu = (time.process_time() - cpu0) / (repeats + 5)  # median_time's 5 warm-up calls included
        rows[b] = {"wall_ms_per_call": wall * 1e3, "cpu_ms_per_image": cpu * 1e3 / b}
    sizes_, walls = np.array(sizes, float), np.array([rows[b]["wall_ms_per_call"] for b in sizes])
    per_image, fixed = np.polyfit(sizes_, walls, 1)
    return {"by_rows": rows, "fit_wall_ms": {"fixed": float(fixed), "per_image": float(per_image)}}


def profile_request(base, body, repeats):
    """Where one REST :predict request's time goes, stage by stage, in-process (medians, ms)."""
    from coophash_keras.serving.http11 import RequestParser, response_bytes
    from coophash_keras.serving.json_tensor import format_predict_response, load_json, parse_predict_object
    from coophash_keras.serving.registry import Servable
    from coophash_keras.serving.rest import _json

    servable = Servable("coophash", 1, os.path.join(base, "coophash", "1"))
    raw = (
        f"POST /v1/models/coophash:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def framing():
        parser = RequestParser(1 << 30)
        parser.feed(raw)
        parser.feed_eof()
        return parser.next()

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
    before = {**ms, "json_parse": median_time(lambda: json.loads(body), repeats) * 1e3}  # the json module's parse
    return {
        "body_bytes": len(body),
        "response_bytes": len(_json(payload)),
        "stages_ms": ms,
        "share": {k: v / sum(ms.values()) for k, v in ms.items()},
        "stages_ms_with_json_module": before,
        "share_with_json_module": {k: v / sum(before.values()) for k, v in before.items()},
    }


def interleaved_rounds(servers, batch64, singles, a):
    """`a.rounds` rounds; in each, every server in turn: one client's batch-64 requests, then the
    concurrent batch-1 clients. -> [{mode: {"batch64": images/s, "concurrent": images/s,
    "concurrent_p99_ms": ms}}], so each ratio can be taken within a round, a minute apart at most."""
    rounds = []
    for _ in range(a.rounds):
        this = {}
        for mode, (proc, url) in servers.items():
            b64 = run_load(url, batch64, 1, a.round_requests // 8, 64, proc.pid)
            many = run_load(url, singles, a.clients, a.round_requests // a.clients, 1, proc.pid)
            this[mode] = {
                "batch64": b64["images_per_s"],
                "concurrent": many["images_per_s"],
                "concurrent_p99_ms": many["p99_ms"],
                "errors": b64["errors"] + many["errors"],
            }
        rounds.append(this)
    return rounds


def summarise_rounds(rounds):
    """Per mode: the median over rounds of each rate and of its ratios to the same round's batch-64
    rates (batching off, and the mode's own), with their range."""
    import numpy as np

    def stat(values):
        return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}

    def off_of(mode):  # the batching-off server with the same environment
        return "batching_off" + (mode[mode.index("_env_") :] if "_env_" in mode else "")

    out = {}
    for mode in rounds[0]:
        mine = [r[mode] for r in rounds]
        out[mode] = {
            "batch64": stat([m["batch64"] for m in mine]),
            "concurrent": stat([m["concurrent"] for m in mine]),
            "concurrent_p99_ms": stat([m["concurrent_p99_ms"] for m in mine]),
            "concurrent_over_batch64_off": stat([r[mode]["concurrent"] / r["batching_off"]["batch64"] for r in rounds]),
            "concurrent_over_own_batch64": stat([m["concurrent"] / m["batch64"] for m in mine]),
            "concurrent_over_same_env_batch64_off": stat(
                [r[mode]["concurrent"] / r[off_of(mode)]["batch64"] for r in rounds]
            ),
            # against the fastest batch-64 rate without batching in the round, whatever its server's environment
            "concurrent_over_best_batch64_off": stat(
                [
                    r[mode]["concurrent"] / max(r[k]["batch64"] for k in r if k.startswith("batching_off"))
                    for r in rounds
                ]
            ),
            "errors": sum(m["errors"] for m in mine),
        }
    return out


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
    p.add_argument(
        "--on-with",
        action="append",
        default=[],
        metavar="SERVER_ARGS",
        help="one more 'on' mode: the first batching file plus these `coophash serve` arguments "
        "(repeatable), e.g. '--tensorflow_intra_op_parallelism 1 --tensorflow_inter_op_parallelism 1'",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="VAR=VAL[,VAR=VAL]",
        help="two more modes, off and on (the first batching file), whose servers run with these environment "
        "variables (repeatable), e.g. 'TF_ENABLE_ONEDNN_OPTS=0'",
    )
    p.add_argument("--models", default="mobilenetv3small,digits")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the batch-64 and concurrent loads")
    p.add_argument("--round-requests", type=int, default=1600, help="images per load in each round")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    configs = a.batching_config or [os.path.join(REPO, "serving", "config", "batching.config")]
    probe = AloneProbe()
    record = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "batching_configs": {f"batching_on_{i}": Path(c).read_text() for i, c in enumerate(configs)},
        "on_with": {f"batching_on_with_{i}": x for i, x in enumerate(a.on_with)},
        "server_env": {f"batching_{m}_env_{i}": x for i, x in enumerate(a.server_env) for m in ("off", "on")},
        "clients_in": "processes of their own (benchmarks/_serving_common.py run_load)",
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        exports = export_models(tmp, a.models.split(","))
        for name in a.models.split(","):
            base, images = exports[name]
            row = direct_rates(base, images, a.repeats)
            row["call_cost_hash_image_bytes"] = call_cost_by_batch(base, images, a.repeats)
            singles = [b64_body(images[i : i + 1]) for i in range(256)]
            batch64 = [b64_body(images[i : i + 64]) for i in range(0, 256, 64)]
            raw64 = json.dumps({"instances": images[:64].tolist()}).encode()
            row["profile_b64_png_b1"] = profile_request(base, singles[0], a.repeats)
            row["profile_raw_pixels_b64"] = profile_request(base, raw64, max(5, a.repeats // 5))
            on = ["--enable_batching", "--batching_parameters_file"]
            modes = [("batching_off", [], None)] + [(f"batching_on_{i}", [*on, c], None) for i, c in enumerate(configs)]
            modes += [(f"batching_on_with_{i}", [*on, configs[0], *x.split()], None) for i, x in enumerate(a.on_with)]
            for i, x in enumerate(a.server_env):
                env = dict(kv.split("=", 1) for kv in x.split(","))
                modes += [(f"batching_off_env_{i}", [], env), (f"batching_on_env_{i}", [*on, configs[0]], env)]
            # Every mode's server is up at once (an idle one costs no CPU), so the rounds below can
            # take turns between them: the machine's speed drifts by tens of percent over minutes,
            # and a ratio of two rates measured minutes apart carried that drift.
            servers = {
                mode: start_server(base, args, os.path.join(tmp, f"{name}_{mode}.log"), env)
                for mode, args, env in modes
            }
            concurrent = f"rest_b64_batch1_{a.clients}_clients"
            try:
                for mode, (proc, url) in servers.items():
                    run_load(url, singles, 4, 10, 1)  # warm-up
                    pid = proc.pid
                    row[mode] = {
                        "rest_b64_batch64_1_client": run_load(url, batch64, 1, max(10, a.repeats // 2), 64, pid),
                        "rest_b64_batch1_1_client": run_load(url, singles, 1, a.repeats * 4, 1, pid),
                        concurrent: run_load(url, singles, a.clients, a.requests, 1, pid),
                        "rest_raw_pixels_batch64_1_client": run_load(url, [raw64], 1, max(5, a.repeats // 5), 64, pid),
                    }
                    print(name, mode, json.dumps(row[mode], indent=1), flush=True)
                row["rounds"] = interleaved_rounds(servers, batch64, singles, a)
            finally:
                for mode, (proc, _) in servers.items():
                    proc.terminate()  # a clean stop (SIGTERM): the batcher logs its batch sizes
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    with open(os.path.join(tmp, f"{name}_{mode}.log")) as fh:
                        row.setdefault(mode, {})["server_log_batching"] = [ln.strip() for ln in fh if "batching:" in ln]
            row["batching_on"] = row["batching_on_0"]
            on = row["batching_on"]
            row["concurrent_on_over_batch64_off"] = (
                on[concurrent]["images_per_s"] / row["batching_off"]["rest_b64_batch64_1_client"]["images_per_s"]
            )
            row["rounds_summary"] = summarise_rounds(row["rounds"])
            print(name, "rounds", json.dumps(row["rounds_summary"], indent=1), flush=True)
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
