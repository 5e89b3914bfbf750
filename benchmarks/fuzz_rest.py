"""Fuzz the REST server with random and malformed requests (loopback only, bounded, seeded).

    python benchmarks/fuzz_rest.py [--requests 2000] [--workers 8] [--seed 0] [--model-base models]

Starts `coophash serve` (read timeout --read-timeout, default 2 s) on a free 127.0.0.1 port and
sends --requests raw requests, one connection each, from --workers threads: valid requests, JSON
bodies mutated (truncated, bit-flipped, deeply nested, wrong types), random URLs and methods,
framing attacks (bad or conflicting lengths, bad chunks, smuggled requests, oversized or folded
headers, binary junk), clients that stall mid-request and clients that reset mid-request.
Reports the status codes, the 5xx answers, client-side connection errors, hangs (neither an
answer nor a close within read timeout + 15 s), whether the server still answers afterwards,
and the tracebacks and ERROR lines in its log."""

import argparse
import base64
import collections
import json
import os
import random
import socket
import struct
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from _serving_common import ensure_model_base, start_server

MODEL = "/v1/models/coophash"


def valid_body(rng, images):
    batch = images[rng.randrange(len(images) - 3) :][: rng.randint(1, 3)]
    if rng.random() < 0.5:
        return {"instances": batch.tolist()}
    return {"signature_name": "serving_default", "inputs": {"images": batch.tolist()}}


def mutate_json(rng, images):
    body = json.dumps(valid_body(rng, images)).encode()
    kind = rng.randrange(10)
    if kind == 0:
        return body[: rng.randrange(len(body))]  # truncated
    if kind == 1:
        data = bytearray(body)
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)  # flipped bytes (also non-UTF-8)
    if kind == 2:
        depth = rng.choice([100, 1000, 100_000])
        return b'{"instances": ' + b"[" * depth + b"1" + b"]" * depth + b"}"  # deep nesting
    if kind == 3:
        value = rng.choice([1e308, -1, 256, 2**70, "x", None, True, {"b64": "AAAA"}, float("nan"), [], {}])
        return json.dumps({"instances": [[[[value]] * 8] * 8]}).encode()
    if kind == 4:
        junk = base64.b64encode(rng.randbytes(rng.randint(0, 3000))).decode()
        return json.dumps({"signature_name": "hash_image_bytes", "instances": [{"b64": junk}]}).encode()
    if kind == 5:
        return json.dumps({"signature_name": rng.choice(["", "search", "nope", 7, None]), "instances": [1]}).encode()
    if kind == 6:
        return json.dumps({"instances": [[[[1]] * 8] * 8] * rng.randint(1, 2000)}).encode()  # big batch
    if kind == 7:
        return json.dumps({"inputs": {"images": [], "x": 1}, "instances": 3}).encode()
    if kind == 8:
        return rng.randbytes(rng.randint(0, 500))
    return json.dumps({"instances": [{"images": [1]}, {"b64": 1}]}).encode()


def random_path(rng):
    return rng.choice(
        [
            MODEL,
            MODEL + "/metadata",
            MODEL + f"/versions/{rng.choice([0, 1, 2, 99, 2**63, 2**64])}",
            MODEL + "/labels/stable",
            MODEL + "/versions/1/labels/x:predict",
            "/v1/models/" + "".join(rng.choice("ab%/:?#.\\~") for _ in range(rng.randint(0, 30))),
            "/v1/models/%00%ff%2F..:predict",
            "/v1/models/" + "a" * rng.choice([100, 4000, 7000]),
            "/v1/" + rng.choice(["", "models", "foo", "models//", "models/coophash:classify"]),
            rng.choice(["/", "/healthz", "*", "http://x/v1/models/coophash", "/V1/MODELS/COOPHASH"]),
            MODEL + ":predict?" + "x=1&" * rng.randint(0, 50),
        ]
    )


def request(method, path, body=None, headers=()):
    head = [f"{method} {path} HTTP/1.1", "Host: fuzz", *headers]
    if body is not None:
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")


def framing_case(rng, images):
    body = json.dumps(valid_body(rng, images)).encode()
    smuggled = request("GET", MODEL)
    pre = f"POST {MODEL}:predict HTTP/1.1\r\nHost: fuzz\r\n".encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    cases = [
        pre + b"Transfer-Encoding: chunked\r\n\r\n" + chunked,  # valid chunked
        pre
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + rng.choice([b"zz", b"-1", b"0x5", b"1" * 20])
        + b"\r\n"
        + smuggled,
        pre + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" + chunked + smuggled,
        pre
        + b"Transfer-Encoding: "
        + rng.choice([b"gzip", b"chunked, gzip", b"identity", b"chunked\x0b"])
        + b"\r\n\r\n",
        pre + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body)) + body + smuggled,
        pre + b"Content-Length: " + rng.choice([b"-1", b"1e3", b"0x10", b" ", b"99999999999999999999"]) + b"\r\n\r\n",
        pre + b"Content-Length: %d\r\n\r\n" % (len(body) // 2) + body,  # the rest is junk as a next request
        pre + b"X: " + b"a" * rng.choice([9000, 70_000]) + b"\r\n\r\n",
        pre + b"".join(b"H%d: v\r\n" % i for i in range(rng.choice([99, 150]))) + b"\r\n",
        pre + b"Content-Length: 2\r\n folded: yes\r\n\r\n{}",
        pre + b"Content-Length: 40000000\r\n\r\n",  # over --max-body-bytes: refused unread
        pre + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n{}",
        rng.randbytes(rng.randint(1, 300)) + b"\r\n\r\n",  # binary junk
        b"GET " + MODEL.encode() + b" HTTP/" + rng.choice([b"2.0", b"0.9", b"1.1x", b"1"]) + b"\r\n\r\n",
        b"GET " + MODEL.encode() + b"\r\n\r\n",  # HTTP/0.9 style
        b"\r\n\r\n\r\n\r\n\r\n" + smuggled,
        request(rng.choice(["HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "X" * 50, "G\x00T"]), MODEL),
        request("GET", MODEL, headers=["Connection: close", "Connection: keep-alive, Upgrade", "Upgrade: h2c"]),
        b"GET /v1/models/cooph\x00ash HTTP/1.1\r\n\r\n",
        b"GET /v1/models/coophash HTTP/1.1\r\nHost: a\rb\r\n\r\n",  # bare CR in a header
    ]
    return rng.choice(cases)


def make_case(rng, images):
    """-> (category, bytes to send, what the client does after sending)."""
    r = rng.random()
    if r < 0.15:
        if rng.random() < 0.5:
            return "valid", request("POST", MODEL + ":predict", json.dumps(valid_body(rng, images)).encode()), "read"
        return "valid", request("GET", rng.choice([MODEL, MODEL + "/metadata"])), "read"
    if r < 0.50:
        return (
            "json",
            request("POST", MODEL + rng.choice([":predict"] * 4 + [":search"]), mutate_json(rng, images)),
            "read",
        )
    if r < 0.65:
        method = rng.choice(["GET", "POST"])
        return "url", request(method, random_path(rng), b"{}" if method == "POST" else None), "read"
    if r < 0.95:
        return "framing", framing_case(rng, images), "read"
    if r < 0.975:
        full = request("POST", MODEL + ":predict", json.dumps(valid_body(rng, images)).encode())
        return "stall", full[: rng.randrange(1, len(full))], "read"  # the server must close it
    full = request("POST", MODEL + ":predict", json.dumps(valid_body(rng, images)).encode())
    return "reset", full[: rng.randrange(1, len(full))], "reset"


def read_response(sock, head_request=False):
    """The status of the first final response (None if the server closed without one)."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None if not data else "truncated"
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        status = int(head.split(b" ", 2)[1])
        if status != 100:  # 100 Continue is interim: the answer follows
            break
    lengths = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
    while len(data) < (lengths[0] if lengths and not head_request else 0):  # HEAD: headers only
        chunk = sock.recv(65536)
        if not chunk:
            return "truncated"
        data += chunk
    return status


def run_case(port, case, client_timeout):
    category, data, then = case
    sock = socket.create_connection(("127.0.0.1", port), timeout=client_timeout)
    try:
        sock.sendall(data)
        if then == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return category, "reset-by-client"
        status = read_response(sock, head_request=data.startswith(b"HEAD "))
        return category, "closed-without-answer" if status is None else status
    except TimeoutError:
        return category, "HANG"
    except OSError as exc:  # resets, broken pipes
        return category, f"connection-error:{type(exc).__name__}"
    finally:
        sock.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--read-timeout", type=float, default=2.0)
    p.add_argument("--model-base", default=None)
    p.add_argument("--json", default=None)
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="passed to coophash serve, e.g. --server-arg=--enable_batching",
    )
    a = p.parse_args()
    from coophash_keras.data import load_digits

    images = load_digits().images
    rng = random.Random(a.seed)
    cases = [make_case(rng, images) for _ in range(a.requests)]
    base = ensure_model_base(a.model_base)
    log_path = os.path.join(tempfile.mkdtemp(), "serve.log")
    proc, url = start_server(base, ["--read-timeout", str(a.read_timeout), *a.server_arg], log_path)
    port = int(url.rsplit(":", 1)[1])
    outcomes = collections.Counter()
    by_category = collections.defaultdict(collections.Counter)
    lock = threading.Lock()

    anomalies = []  # the requests behind any 5xx, connection error, truncated answer or hang

    def one(case):
        category, outcome = run_case(port, case, a.read_timeout + 15)
        with lock:
            outcomes[outcome] += 1
            by_category[category][str(outcome)] += 1
            bad = (isinstance(outcome, int) and outcome >= 500) or outcome in ("truncated", "HANG")
            if (bad or str(outcome).startswith("connection-error")) and len(anomalies) < 20:
                anomalies.append({"category": category, "outcome": outcome, "request": repr(case[1][:200])})

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(a.workers) as pool:
            list(pool.map(one, cases))
        wall = time.perf_counter() - start
        alive = run_case(port, ("valid", request("GET", MODEL, headers=["Connection: close"]), "read"), 60)[1]
        predict = request("POST", MODEL + ":predict", json.dumps({"instances": images[:1].tolist()}).encode())
        alive_predict = run_case(port, ("valid", predict, "read"), 60)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    with open(log_path) as fh:
        log = fh.read()
    result = {
        "requests": a.requests,
        "seed": a.seed,
        "workers": a.workers,
        "read_timeout_s": a.read_timeout,
        "status_5xx": sum(n for o, n in outcomes.items() if isinstance(o, int) and o >= 500),
        "connection_errors": sum(n for o, n in outcomes.items() if str(o).startswith("connection-error")),
        "truncated_responses": outcomes.get("truncated", 0),
        "hangs": outcomes.get("HANG", 0),
        "server_answers_after": [alive, alive_predict],
        "server_log_tracebacks": log.count("Traceback"),
        "server_log_error_lines": sum(" ERROR " in ln for ln in log.splitlines()),
        "outcomes": {str(k): v for k, v in sorted(outcomes.items(), key=lambda kv: str(kv[0]))},
        "by_category": {c: dict(sorted(v.items())) for c, v in sorted(by_category.items())},
        "anomalies": anomalies,
        "wall_s": wall,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
