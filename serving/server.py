"""A model server with TF-Serving's REST and gRPC APIs over a model base path.

    coophash serve --model-base models --port 8501 --grpc-port 8500

The real `tensorflow_model_server` cannot be installed on our test machines; this server speaks
the same API (same URLs, JSON forms, status codes, protos), so clients written for TF-Serving work
unchanged against either. See docs/SERVING.md, "Deploy on TF-Serving", for the real server."""

import logging

from coophash_keras.serving.batcher import Batcher
from coophash_keras.serving.frontend import RestFrontend, default_num_threads, listen
from coophash_keras.serving.grpc_service import make_grpc_server
from coophash_keras.serving.registry import ModelRegistry
from coophash_keras.serving.rest import RestApi

log = logging.getLogger("coophash.serving")


class ModelServer:
    """REST (and optionally gRPC) over one ModelRegistry. Port 0 picks a free port.

    `max_num_load_retries`, `load_retry_interval` (seconds): retries of a version that failed to
    load (TF-Serving's flags of those names; see ModelRegistry). `rest_api_num_threads`: threads
    that answer complete REST requests (default: CPU cores, at least 2);
    `read_timeout` (seconds) and `max_connections` bound slow clients (see serving/frontend.py).
    `batching_parameters`: a serving/batching_config.py BatchingParameters to merge concurrent
    requests into batches (TF-Serving's --enable_batching), REST and gRPC in the same queues; then
    the REST workers wait for their rows, and their default number is 2 x the largest merged batch
    (TF-Serving's advice for request threads), at least the default, at most 128.
    A port that cannot be bound raises coophash_keras.serving.errors.ListenError, one line naming it."""

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
        rest_api_num_threads=None,
        read_timeout=30.0,
        max_connections=1000,
        batching_parameters=None,
    ):
        """`indexes`: {model name: index file, or milvus:URI#COLLECTION} served by
        POST /v1/models/{name}:search (coophash_keras.index.open_index)."""
        # Ports first: a busy port fails at once, not after every model has loaded.
        rest_sock = listen(host, port, "REST")
        self.batcher = None
        try:
            if grpc_port:  # gRPC's own bind error is a C++ log line and a vague RuntimeError
                listen(host, grpc_port, "gRPC").close()
            self.registry = ModelRegistry(model_base, poll_interval, max_num_load_retries, load_retry_interval)
            loaded = {name: self._load_index(name, path) for name, path in (indexes or {}).items()}
            self.batcher = Batcher(batching_parameters) if batching_parameters is not None else None
            self.grpc, self.grpc_port = (None, None)
            if grpc_port is not None:
                self.grpc, self.grpc_port = make_grpc_server(
                    self.registry, host, grpc_port, max_message_bytes=max_body_bytes, batcher=self.batcher
                )
        except BaseException:
            rest_sock.close()
            if self.batcher is not None:
                self.batcher.stop()
            raise
        if self.batcher is not None and rest_api_num_threads is None:
            rest_api_num_threads = max(default_num_threads(), min(2 * batching_parameters.batch_size_limit, 128))
        self.rest = RestFrontend(
            RestApi(self.registry, loaded, self.batcher),
            rest_sock,
            max_body_bytes,
            num_threads=rest_api_num_threads,
            read_timeout=read_timeout,
            max_connections=max_connections,
        )
        self.host = host
        self.port = self.rest.server_address[1]

    def _load_index(self, name, path):
        from coophash_keras.index import open_index

        index = open_index(path)
        problem = self.registry.get(name).index_mismatch(index)
        if problem:
            raise ValueError(f"index {path}: {problem}")
        return index

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self.registry.start_polling()
        if self.grpc is not None:
            self.grpc.start()
        self.rest.start()
        return self

    def stop(self):
        self.registry.stop()
        self.rest.stop()
        if self.grpc is not None:
            self.grpc.stop(grace=1).wait()
        if self.batcher is not None:
            self.batcher.stop()

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
            self.rest.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
