"""Load test (loopback only, bounded): N concurrent clients x M REST :predict requests each.

    python benchmarks/load_rest.py [--clients 16] [--requests 500] [--model-base models] [--server-arg=--flag=value]

Starts `coophash serve` on a free 127.0.0.1 port, sends batch-1 requests of real digits from
N threads with keep-alive connections, and prints errors, throughput and p50/p99 latency."""

import argparse
import http.client
import json
import os
import threading
import time

import numpy as np
from _serving_common import ensure_model_base, start_server


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--model-base", default=None)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="passed to coophash serve, e.g. --server-arg=--rest-api-num-threads=4",
    )
    a = p.parse_args()
    from coophash_keras.data import load_digits

    images = load_digits().images
    base = ensure_model_base(a.model_base)
    proc, url = start_server(base, a.server_arg)
    host, port = url.split("//")[1].split(":")
    latencies, errors = [], []
    lock = threading.Lock()

    def client(cid):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        mine, bad = [], []
        for i in range(a.requests):
            body = json.dumps({"instances": images[(cid * a.requests + i) % len(images)][None].tolist()})
            t = time.perf_counter()
            try:
                conn.request("POST", "/v1/models/coophash:predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status != 200 or "predictions" not in json.loads(payload):
                    bad.append(resp.status)
            except Exception as exc:  # noqa: BLE001 - counted, reported
                bad.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
            mine.append(time.perf_counter() - t)
        conn.close()
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    try:
        start = time.perf_counter()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        wall = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = np.array(latencies) * 1e3
    result = {
        "clients": a.clients,
        "requests_per_client": a.requests,
        "total": len(lat),
        "errors": len(errors),
        "wall_s": wall,
        "requests_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "cpus": os.cpu_count(),
        "server_args": a.server_arg,
    }
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
