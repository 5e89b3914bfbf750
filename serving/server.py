"""A model server with TF-Serving's REST and gRPC APIs over a model base path.

    coophash serve --model-base models --port 8501 --grpc-port 8500

The real `tensorflow_model_server` cannot be installed on our test machines; this server speaks
the same API (same URLs, JSON forms, status codes, protos), so clients written for TF-Serving work
unchanged against either. See README "Deploy on TF-Serving" for the real server."""

import logging
import threading

from serving.grpc_service import make_grpc_server
from serving.registry import ModelRegistry
from serving.rest import make_rest_server

log = logging.getLogger("coophash.serving")


class ModelServer:
    """REST (and optionally gRPC) over one ModelRegistry. Port 0 picks a free port.

    `max_num_load_retries`, `load_retry_interval` (seconds): retries of a version that failed to
    load (TF-Serving's flags of those names; see ModelRegistry)."""

    def __init__(
        self,
        model_base,
        host="127.0.0.1",
        port=8501,
        grpc_port=None,
        poll_interval=1.0,
        max_body_bytes=32 * 1024 * 1024,
        indexes=None,
        *,
        max_num_load_retries=5,
        load_retry_interval=60.0,
    ):
        """`indexes`: {model name: HammingIndex file} served by POST /v1/models/{name}:search."""
        self.registry = ModelRegistry(model_base, poll_interval, max_num_load_retries, load_retry_interval)
        loaded = {}
        for name, path in (indexes or {}).items():
            from coophash_keras.index import HammingIndex

            loaded[name] = HammingIndex.load(path, mmap=True)
            servable = self.registry.get(name)
            fingerprint = servable.info.get("model_fingerprint")
            if fingerprint and loaded[name].model_version and fingerprint != loaded[name].model_version:
                raise ValueError(
                    f"index {path} was built by model {loaded[name].model_version}, but {name} "
                    f"version {servable.version} is model {fingerprint}: rebuild the index"
                )
        self.rest = make_rest_server(self.registry, host, port, max_body_bytes, loaded)
        self.host = host
        self.port = self.rest.server_address[1]
        self.grpc, self.grpc_port = (None, None)
        if grpc_port is not None:
            self.grpc, self.grpc_port = make_grpc_server(
                self.registry, host, grpc_port, max_message_bytes=max_body_bytes
            )
        self._thread = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self.registry.start_polling()
        if self.grpc is not None:
            self.grpc.start()
        self._thread = threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.registry.stop()
        self.rest.shutdown()
        self.rest.server_close()
        if self.grpc is not None:
            self.grpc.stop(grace=1).wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def serve_forever(self):
        self.start()
        log.info(
            "REST on %s%s; models: %s",
            self.url,
            f", gRPC on {self.host}:{self.grpc_port}" if self.grpc else "",
            self.registry.names(),
        )
        try:
            self._thread.join()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
