"""Shared by the serving benchmarks: an exported model to serve, a server subprocess, and the load
generator (concurrent keep-alive clients, each in a process of its own)."""

import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def ensure_model_base(model_base=None):
    """Use `model_base` if given (or runs/demo/models if the demo ran); else train 1 epoch on digits
    and export it to a temporary base."""
    for cand in (model_base, os.path.join(REPO, "runs", "demo", "models")):
        if cand and os.path.isdir(cand):
            return cand
    from coophash_keras import CoopHashConfig
    from coophash_keras.data import load_digits

    data = load_digits()
    return export_model(tempfile.mkdtemp(), "coophash", CoopHashConfig(), data.images, data.labels, data.images)


def export_model(workdir, model_name, config, images, labels, database_images=None, train_rows=None):
    """Train `model_name` (a registered model) with `config` for one epoch on the first `train_rows`
    of (images, labels) (all by default), seeded, save it and export it as model "coophash" under
    workdir/models -> that model base. The weights are not the point: the serving benchmarks time
    the served graph, which one epoch builds."""
    import keras
    import tensorflow as tf

    from coophash_keras.export import export_saved_model
    from coophash_keras.io import save_model
    from coophash_keras.registry import model_class

    keras.utils.set_random_seed(0)
    model = model_class(model_name)(config)
    model.compile()
    rows = len(images) if train_rows is None else train_rows
    model.fit(tf.data.Dataset.from_tensor_slices((images[:rows], labels[:rows])).batch(64), epochs=1, verbose=0)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "model.keras")
    save_model(model, path)
    base = os.path.join(workdir, "models")
    export_saved_model(path, base, "coophash", database_images=database_images)
    return base


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_base, extra_args=(), log_path=None, env=None):
    """`coophash serve` in a subprocess on a free loopback port; returns (process, url). Its log
    goes to `log_path` if given (else it is discarded); `env` adds environment variables (e.g.
    {"TF_ENABLE_ONEDNN_OPTS": "0"}, read by TensorFlow as it loads)."""
    port = free_port()
    log = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coophash_keras.cli",
            "serve",
            "--model-base",
            model_base,
            "--port",
            str(port),
            "--grpc-port",
            str(free_port()),
            *extra_args,
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/models/coophash", timeout=2).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited during start-up") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not come up in 120 s")


# ------------------------------------------------------------------------------ load generator
PREDICT_PATH = "/v1/models/coophash:predict"


def median_time(fn, repeats, warmup=5):
    """Median seconds of `repeats` calls of `fn`, after `warmup` untimed ones."""
    import numpy as np

    for _ in range(warmup):
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


class _KeepAlive:
    """One keep-alive HTTP/1.1 connection that POSTs and reads whole responses (Content-Length
    framing, which the server always sends). Lean on purpose: http.client costs ~0.25 ms of CPU per
    request, and on a 2-core machine the clients' CPU is taken from the server it measures."""

    def __init__(self, host, port, timeout):
        self.address, self.timeout, self.sock, self.buf = (host, port), timeout, None, b""

    def post(self, head, body):
        """-> (status, response body). Reconnects first if the last response closed the connection."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        self.sock.sendall(head + body)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = dict(line.split(b":", 1) for line in lines[1:])
        fields = {k.strip().lower(): v.strip().lower() for k, v in fields.items()}
        length = int(fields[b"content-length"])
        while len(self.buf) < length:
            self._recv()
        payload, self.buf = self.buf[:length], self.buf[length:]
        if fields.get(b"connection") == b"close":
            self.close()
        return status, payload

    def _recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _client_process(url, path, bodies, client_ids, requests, check, barrier, results):
    """Runs in a process of its own (spawned: no TensorFlow, no threads of the parent): one client per
    id, each `requests` requests in a row on one connection; puts (latencies, errors, CPU seconds)."""
    import threading

    host, port = url.split("//")[1].split(":")
    heads = [
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(b)}\r\n\r\n".encode()
        for b in bodies
    ]
    out = []

    def client(cid):
        conn, mine, bad = _KeepAlive(host, int(port), 120), [], []
        barrier.wait()
        for i in range(requests):
            j = (cid * requests + i) % len(bodies)
            t = time.perf_counter()
            try:
                status, payload = conn.post(heads[j], bodies[j])
                if status != 200 or (check is not None and check.encode() not in payload):
                    bad.append(f"{status} {payload[:100]!r}")
            except OSError as exc:  # counted, reported; the next request reconnects
                bad.append(repr(exc))
                conn.close()
            mine.append(time.perf_counter() - t)
        conn.close()
        out.append((mine, bad))

    cpu = cpu_seconds()
    threads = [threading.Thread(target=client, args=(c,)) for c in client_ids]
    [t.start() for t in threads]
    [t.join() for t in threads]
    results.put(([x for mine, _ in out for x in mine], [x for _, bad in out for x in bad], cpu_seconds() - cpu))


def run_load(url, bodies, clients, requests, rows=1, server_pid=None, path=PREDICT_PATH, check=None, processes=None):
    """`clients` concurrent keep-alive clients, each sending `requests` POSTs of `bodies` (client c,
    request i: body (c * requests + i) mod len) and waiting for each answer before the next: the load
    of `clients` callers. Each client runs in a process of its own (`processes`, default one per
    client), so the clients do not share one GIL and measure the server rather than themselves.
    A response is an error unless it is a 200 (and contains `check`, if given).

    -> images/s (`rows` per request), requests/s, p50/p99 latency (ms), errors, and the CPU of the
    server (`server_pid`) and of all the clients, per request and in cores."""
    import numpy as np

    ctx = multiprocessing.get_context("spawn")
    processes = min(processes or clients, clients)
    groups = [list(range(clients))[i::processes] for i in range(processes)]
    barrier, results = ctx.Barrier(clients + 1), ctx.Queue()
    procs = [
        ctx.Process(target=_client_process, args=(url, path, bodies, g, requests, check, barrier, results))
        for g in groups
    ]
    [p.start() for p in procs]
    server0 = cpu_seconds(server_pid) if server_pid else 0.0
    barrier.wait(timeout=120)  # every client connected-to-be and waiting: go
    t0 = time.perf_counter()
    latencies, errors, client_cpu = [], [], 0.0
    for _ in procs:
        lat, bad, cpu = results.get(timeout=3600)
        latencies += lat
        errors += bad
        client_cpu += cpu
    wall = time.perf_counter() - t0
    server_cpu = (cpu_seconds(server_pid) - server0) if server_pid else None
    [p.join() for p in procs]
    lat = np.array(latencies) * 1e3
    n = len(lat)
    return {
        "clients": clients,
        "client_processes": processes,
        "requests": n,
        "rows_per_request": rows,
        "errors": len(errors),
        "first_errors": errors[:3],
        "wall_s": wall,
        "requests_per_s": n / wall,
        "images_per_s": n * rows / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "client_cpu_ms_per_request": client_cpu / n * 1e3,
        "client_cores_busy": client_cpu / wall,
        "server_cpu_ms_per_request": server_cpu / n * 1e3 if server_pid else None,
        "server_cores_busy": server_cpu / wall if server_pid else None,
    }
