"""Load test (loopback only, bounded): N concurrent clients x M REST :predict requests each.

    python benchmarks/load_rest.py [--clients 16] [--requests 500] [--model-base models] [--server-arg=--flag=value]

Starts `coophash serve` on a free 127.0.0.1 port, sends batch-1 requests of real digits from
N keep-alive clients (each in a process of its own: _serving_common.run_load), and prints errors
(anything but a 200 with "predictions"), throughput, p50/p99 latency and the CPU of server and clients."""

import argparse
import json
import os

from _serving_common import ensure_model_base, run_load, start_server


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
    bodies = [json.dumps({"instances": image[None].tolist()}).encode() for image in images]
    base = ensure_model_base(a.model_base)
    proc, url = start_server(base, a.server_arg)
    try:
        r = run_load(url, bodies, a.clients, a.requests, server_pid=proc.pid, check='"predictions"')
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    result = {
        "clients": a.clients,
        "requests_per_client": a.requests,
        "total": r["requests"],
        "errors": r["errors"],
        "first_errors": r["first_errors"],
        "wall_s": r["wall_s"],
        "requests_per_s": r["requests_per_s"],
        "p50_ms": r["p50_ms"],
        "p99_ms": r["p99_ms"],
        "client_cpu_ms_per_request": r["client_cpu_ms_per_request"],
        "server_cpu_ms_per_request": r["server_cpu_ms_per_request"],
        "cpus": os.cpu_count(),
        "server_args": a.server_arg,
    }
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
