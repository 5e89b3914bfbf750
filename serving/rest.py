"""The TF-Serving REST API (v1) over a ModelRegistry: URLs, JSON forms, status codes, error bodies."""

import json
import logging
import re
from urllib.parse import unquote

from google.protobuf import json_format

from coophash_keras.serving.batcher import run_alone
from coophash_keras.serving.errors import ServingError, invalid
from coophash_keras.serving.json_tensor import (
    format_predict_response,
    load_json,
    parse_predict_object,
    parse_predict_request,
)
from coophash_keras.serving.status import model_status_response

log = logging.getLogger("coophash.serving")

# tensorflow_serving/model_servers/http_rest_api_util.cc
_PREDICT = re.compile(
    r"(?i)^/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)$"
)
_SEARCH = re.compile(r"(?i)^/v1/models/([^/:]+)(?:/versions/(\d+))?:search$")
_GET = re.compile(r"(?i)^/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?$")


def metadata_json(servable):
    metadata = {
        "signature_def": json_format.MessageToDict(
            servable.signature_def_map(),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    }
    if servable.info.get("ood"):  # ours, beside TF-Serving's field: how in_distribution was calibrated
        metadata["ood"] = servable.info["ood"]
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": metadata,
    }


def _json(payload):
    return json.dumps(payload).encode()  # no indent: keeps the C encoder


def _error_answer(exc):
    """(status, content type, body) of a failed request, from inside its `except`: a ServingError's
    HTTP code and message, anything else a 500 with its traceback logged; never a stack trace to
    the client, and the server keeps serving."""
    if isinstance(exc, ServingError):
        return exc.http_status, "application/json", _json({"error": exc.message})
    log.exception("internal error")
    return 500, "application/json", _json({"error": f"Internal error: {exc}"})


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


class RestApi:
    """The routes: (method, request target, body) -> (HTTP status, content type, body bytes).
    Framing, connections and threads are the front end's business (serving/frontend.py)."""

    def __init__(self, registry, indexes=None, batcher=None):
        """`batcher`: a serving/batcher.py Batcher that merges concurrent requests (shared with
        gRPC), or None to run each request on its own."""
        self.registry = registry
        self.indexes = dict(indexes or {})  # model name -> HammingIndex, for the :search route
        self.batcher = batcher
        self.run = batcher.run if batcher is not None else run_alone

    def handle_nowait(self, method, target, body):
        """handle() for a :predict request that is answered from a merged batch, without waiting
        for it: -> (status, content type, body) if the answer is known at once (a bad request),
        else a concurrent.futures.Future of the outputs and `finish(future)` that makes the answer
        from it; None for anything else (call handle() for that). With a batcher only: without one
        the model would run in the calling thread."""
        if self.batcher is None or method != "POST" or not target.lower().startswith("/v1/"):
            return None
        m = _PREDICT.match(target.split("?", 1)[0])
        if not m or m.group(4).lower() != "predict":
            return None
        try:
            name, version = unquote(m.group(1)), _version(m.group(2), m.group(3))
            servable = self.registry.get(name, version)
            sig_name, inputs, row_format = parse_predict_request(body, servable.signature)
            future = self.batcher.submit(servable.signature(sig_name), inputs)
        except Exception as exc:
            return _error_answer(exc)

        def finish(done):
            try:
                return 200, "application/json", _json(format_predict_response(done.result(), row_format))
            except Exception as exc:
                return _error_answer(exc)

        return future, finish

    def handle(self, method, target, body):
        # The real server hands every method on /v1/... to its REST handler, which answers
        # "Malformed request" for anything but its GET and POST routes; other paths get libevent's
        # plain 404.
        if not target.lower().startswith("/v1/"):
            return 404, "text/html", b"<html><body>404 Not Found</body></html>"
        try:
            if method == "GET":
                payload = self._get(target)
            elif method == "POST":
                payload = self._post(target, body)
            else:
                raise invalid(f"Malformed request: {method} {target}")
            return 200, "application/json", _json(payload)
        except Exception as exc:
            return _error_answer(exc)

    def _get(self, target):
        path = target.split("?", 1)[0]
        if re.fullmatch(r"(?i)/v1/models/?", path):
            raise invalid("Missing model name in request.")
        m = _GET.match(path)
        if not m:
            raise invalid(f"Malformed request: GET {path}")
        name, version = unquote(m.group(1)), _version(m.group(2), m.group(3))
        if m.group(4):
            return metadata_json(self.registry.get(name, version))
        return json_format.MessageToDict(
            model_status_response(self.registry, name, version),
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )

    def _post(self, target, body):
        path = target.split("?", 1)[0]
        s = _SEARCH.match(path)
        if s:
            return self._search(unquote(s.group(1)), _version(s.group(2), None), body)
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
        outputs = self.run(servable.signature(sig_name), inputs)
        return format_predict_response(outputs, row_format)

    def _search(self, name, version, body):
        """POST /v1/models/{name}:search {"instances": images or b64 objects, "k": 10} ->
        {"results": [{"ids", "distances", "codes"[, "paths"][, "ood"]}]}: codes from the served model,
        neighbours from the index configured for it (a HammingIndex file or a Milvus collection, for
        databases too large to embed in the graph); "paths" when the index stores them; "ood" (true
        for a query unlike the training images) when the export has an `in_distribution` output."""
        servable = self.registry.get(name, version)
        index = self.indexes.get(name)
        if index is None:
            raise ServingError(
                "NOT_FOUND", f"no index is configured for model {name} (coophash serve --index {name}=PATH)"
            )
        problem = servable.index_mismatch(index)
        if problem:
            raise ServingError("FAILED_PRECONDITION", problem)
        request = load_json(body) if body else None
        if not isinstance(request, dict) or "instances" not in request:
            raise invalid('a :search request is {"instances": [...], "k": 10}')
        k = request.get("k", 10)
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0 or k > len(index):
            raise invalid(f"k must be an integer in [1, {len(index)}], got {k!r}")
        instances = request["instances"]
        encoded = isinstance(instances, list) and instances and isinstance(instances[0], dict)
        signature = "hash_image_bytes" if encoded else "serving_default"
        sig_name, inputs, _ = parse_predict_object(
            {"signature_name": signature, "instances": instances}, servable.signature
        )
        flags = [o for o in ("in_distribution",) if o in servable.signature(sig_name).outputs]  # a calibrated export
        packed = self.run(servable.signature(sig_name), inputs, ["packed", "codes", *flags])
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
        if flags:
            for result, inside in zip(results, packed["in_distribution"]):
                result["ood"] = not bool(inside)
        return {"results": results}
