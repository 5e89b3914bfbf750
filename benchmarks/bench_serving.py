"""REST :predict overhead and throughput against a direct call of the loaded SavedModel.

    python benchmarks/bench_serving.py [--repeats 300] [--model-base models]

batch 1: median latency of REST :predict (server in a subprocess, keep-alive, loopback) divided
by the median latency of calling the same SavedModel signature in-process;
batch 64: images/s both ways."""

import argparse
import http.client
import json
import os

from _serving_common import ensure_model_base, median_time, start_server


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--model-base", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    import tensorflow as tf

    from coophash_keras.data import load_digits

    images = load_digits().images
    base = ensure_model_base(a.model_base)
    version = max(int(v) for v in os.listdir(os.path.join(base, "coophash")) if v.isdigit())
    sig = tf.saved_model.load(os.path.join(base, "coophash", str(version))).signatures["serving_default"]
    proc, url = start_server(base)
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def rest(batch):
        body = json.dumps({"instances": images[:batch].tolist()})

        def call():
            conn.request("POST", "/v1/models/coophash:predict", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = json.loads(resp.read())
            assert resp.status == 200 and len(out["predictions"]) == batch

        return call

    def direct(batch):
        x = tf.constant(images[:batch])
        return lambda: {k: v.numpy() for k, v in sig(images=x).items()}

    try:
        r = {}
        r["direct_b1_ms"] = median_time(direct(1), a.repeats, warmup=10) * 1e3
        r["rest_b1_ms"] = median_time(rest(1), a.repeats, warmup=10) * 1e3
        r["rest_over_direct_b1"] = r["rest_b1_ms"] / r["direct_b1_ms"]
        r["direct_b64_images_per_s"] = 64 / median_time(direct(64), a.repeats // 3, warmup=10)
        r["rest_b64_images_per_s"] = 64 / median_time(rest(64), a.repeats // 3, warmup=10)
        r["cpus"] = os.cpu_count()
    finally:
        conn.close()
        proc.terminate()
        proc.wait(timeout=30)
    print(json.dumps(r, indent=2))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(r, fh, indent=2)


if __name__ == "__main__":
    main()
