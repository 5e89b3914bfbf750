"""The TF-Serving REST API (v1) over a ModelRegistry, on http.server's threading server."""

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from google.protobuf import json_format

from serving.errors import ServingError, invalid
from serving.json_tensor import format_predict_response, parse_predict_request
from serving.status import model_status_response

log = logging.getLogger("coophash.serving")

# tensorflow_serving/model_servers/http_rest_api_util.cc
_PREDICT = re.compile(
    r"(?i)^/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)$"
)
_SEARCH = re.compile(r"(?i)^/v1/models/([^/:]+)(?:/versions/(\d+))?:search$")
_GET = re.compile(r"(?i)^/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?$")


def metadata_json(servable):
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {
            "signature_def": json_format.MessageToDict(
                servable.signature_def_map(),
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        },
    }


def _version(text, label):
    if label is not None:
        raise invalid("Unrecognized servable version label: " + label)
    if text is None:
        return None
    try:
        value = int(text)
        if value > 2**63 - 1:
            raise ValueError
        return value
    except ValueError:
        raise invalid(f"Failed to convert version: {text}") from None


class RestHandler(BaseHTTPRequestHandler):
    server_version = "coophash-serving"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for the
    # delayed ACK on every response.
    disable_nagle_algorithm = True
    registry = None  # set by make_rest_server
    max_body_bytes = 0  # set by make_rest_server
    indexes = {}  # model name -> HammingIndex, for the :search route

    def log_message(self, fmt, *args):  # route access logs through logging (quiet by default)
        log.debug("%s - %s", self.address_string(), fmt % args)

    def _send_json(self, status, payload):
        body = json.dumps(payload).encode()  # no indent: keeps the C encoder
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, exc):
        self._send_json(exc.http_status, {"error": exc.message})

    def _not_v1(self):
        if self.path.lower().startswith("/v1/"):
            return False
        body = b"<html><body>404 Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            raise ServingError("INVALID_ARGUMENT", "Missing Content-Length header (chunked bodies are not supported)")
        try:
            length = int(length)
        except ValueError:
            raise invalid(f"Bad Content-Length header: {length}") from None
        if length > self.max_body_bytes:
            self.close_connection = True  # do not read the oversized body
            # 413, as the real server's HTTP layer (libevent max body size) answers.
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                f"Request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes",
                http_status=413,
            )
        return self.rfile.read(length)

    def do_GET(self):
        if self._not_v1():
            return
        try:
            path = self.path.split("?", 1)[0]
            if re.fullmatch(r"(?i)/v1/models/?", path):
                raise invalid("Missing model name in request.")
            m = _GET.match(path)
            if not m:
                raise invalid(f"Malformed request: GET {path}")
            name, version = unquote(m.group(1)), _version(m.group(2), m.group(3))
            if m.group(4):
                servable = self.registry.get(name, version)
                self._send_json(200, metadata_json(servable))
            else:
                response = model_status_response(self.registry, name, version)
                self._send_json(
                    200,
                    json_format.MessageToDict(
                        response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
                    ),
                )
        except ServingError as exc:
            self._send_error(exc)

    def do_POST(self):
        if self._not_v1():
            return
        try:
            body = self._read_body()
            path = self.path.split("?", 1)[0]
            s = _SEARCH.match(path)
            if s:
                self._send_json(200, self._search(unquote(s.group(1)), _version(s.group(2), None), body))
                return
            m = _PREDICT.match(path)
            if not m:
                raise invalid(f"Malformed request: POST {path}")
            name, version, method = unquote(m.group(1)), _version(m.group(2), m.group(3)), m.group(4).lower()
            servable = self.registry.get(name, version)
            if method != "predict":
                raise invalid(
                    f"Expected {'classification' if method == 'classify' else 'regression'} signature "
                    f"method_name to be tensorflow/serving/{method}; this model exports predict "
                    "signatures only"
                )
            sig_name, inputs, row_format = parse_predict_request(body, servable.signature)
            outputs = servable.signature(sig_name).run(inputs)
            self._send_json(200, format_predict_response(outputs, row_format))
        except ServingError as exc:
            self._send_error(exc)
        except Exception as exc:  # never a stack trace to the client; the server keeps serving
            log.exception("internal error")
            self._send_json(500, {"error": f"Internal error: {exc}"})

    def _search(self, name, version, body):
        """POST /v1/models/{name}:search {"instances": images or b64 objects, "k": 10} ->
        {"results": [{"ids", "distances", "codes"[, "paths"]}]}: codes from the served model,
        neighbours from the index configured for it (a HammingIndex file or a Milvus collection, for
        databases too large to embed in the graph); "paths" when the index stores them."""
        servable = self.registry.get(name, version)
        index = self.indexes.get(name)
        if index is None:
            raise ServingError(
                "NOT_FOUND", f"no index is configured for model {name} (coophash serve --index {name}=PATH)"
            )
        fingerprint = servable.info.get("model_fingerprint")
        if index.model_version and fingerprint and index.model_version != fingerprint:
            raise ServingError(
                "FAILED_PRECONDITION",
                f"the index was built by model {index.model_version} but "
                f"{name} version {servable.version} is model {fingerprint}: rebuild the index",
            )
        try:
            request = json.loads(body) if body else None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid(f"JSON Parse error: {exc}") from None
        if not isinstance(request, dict) or "instances" not in request:
            raise invalid('a :search request is {"instances": [...], "k": 10}')
        k = request.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0 or k > len(index):
            raise invalid(f"k must be an integer in [1, {len(index)}], got {k!r}")
        instances = request["instances"]
        encoded = isinstance(instances, list) and instances and isinstance(instances[0], dict)
        signature = "hash_image_bytes" if encoded else "serving_default"
        forwarded = json.dumps({"signature_name": signature, "instances": instances}).encode()
        sig_name, inputs, _ = parse_predict_request(forwarded, servable.signature)
        packed = servable.signature(sig_name).run(inputs, ["packed", "codes"])
        try:
            ids, distances = index.search(packed["packed"], k)
            paths = index.paths_for(ids).tolist() if index.has_paths else None
        except (ValueError, KeyError) as exc:  # e.g. Milvus's own limits, a Milvus server gone
            raise ServingError("FAILED_PRECONDITION", f"index search failed: {exc}") from None
        results = [
            {"ids": i.tolist(), "distances": d.tolist(), "codes": c.tolist()}
            for i, d, c in zip(ids, distances, packed["codes"])
        ]
        for result, p in zip(results, paths or []):
            result["paths"] = p
        return {"results": results}

    def do_PUT(self):
        self._method_not_allowed()

    def do_DELETE(self):
        self._method_not_allowed()

    def _method_not_allowed(self):
        if not self._not_v1():
            self._send_json(400, {"error": f"Malformed request: {self.command} {self.path}"})


def make_rest_server(registry, host="127.0.0.1", port=8501, max_body_bytes=32 * 1024 * 1024, indexes=None):
    handler = type(
        "BoundRestHandler",
        (RestHandler,),
        {"registry": registry, "max_body_bytes": max_body_bytes, "indexes": dict(indexes or {})},
    )
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
