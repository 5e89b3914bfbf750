"""Shared by the serving benchmarks: an exported model to serve, and a server subprocess."""

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
    from coophash_keras import CoopHash, CoopHashConfig
    from coophash_keras.data import load_digits
    from coophash_keras.export import export_saved_model
    from coophash_keras.io import save_model

    data = load_digits()
    model = CoopHash(CoopHashConfig())
    model.compile()
    model.fit(data.as_dataset(64, drop_remainder=True), epochs=1, verbose=0)
    tmp = tempfile.mkdtemp()
    save_model(model, os.path.join(tmp, "model.keras"))
    export_saved_model(
        os.path.join(tmp, "model.keras"), os.path.join(tmp, "models"), "coophash", database_images=data.images
    )
    return os.path.join(tmp, "models")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_base, extra_args=(), log_path=None):
    """`coophash serve` in a subprocess on a free loopback port; returns (process, url). Its log
    goes to `log_path` if given (else it is discarded)."""
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
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
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
