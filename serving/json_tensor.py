"""TF-Serving's REST JSON <-> tensors rules (tensorflow_serving/util/json_tensor.cc, api_rest.md).

Request: {"signature_name"?: str, "instances": [...]} (row) or {"inputs": tensor | {name: tensor}}
(columnar). {"b64": "..."} is a binary value, accepted only for DT_STRING inputs.
Response: row -> {"predictions": [...]}, a list of per-row objects when there are several outputs;
columnar -> {"outputs": tensor | {name: tensor}}. DT_STRING outputs named *_bytes come back as b64."""

import base64
import binascii
import json

import numpy as np
import orjson

from coophash_keras.serving.errors import invalid


def _show(value):
    """The start of a JSON value for an error message (json.dumps recurses: a deep one raises)."""
    try:
        return json.dumps(value)[:80]
    except RecursionError:
        return "(a value nested too deep to show)"


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


MAX_RANK = 64  # numpy's limit; deeper lists would only exhaust the recursion below (a 500)


def _decode_values(value, is_string, where, depth=0):
    """Nested JSON lists -> nested Python values, b64 objects decoded; shape checked later."""
    if isinstance(value, list):
        if depth >= MAX_RANK:
            raise invalid(f"JSON Value for {where} is nested deeper than {MAX_RANK} levels")
        return [_decode_values(v, is_string, where, depth + 1) for v in value]
    if _is_b64(value):
        if not is_string:
            raise invalid(f"JSON Value: b64 object found for {where}, but b64 is only accepted for DT_STRING inputs")
        if not isinstance(value["b64"], str):
            raise invalid(f"JSON Value: b64 value for {where} must be a string")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid(f"Unable to base64 decode the value for {where}") from None
    if isinstance(value, dict):
        raise invalid(f"JSON Value: {_show(value)} for {where} is an object; expected a value or list")
    if is_string:
        if not isinstance(value, str):
            raise invalid(f"JSON Value: {_show(value)} for {where} is not of expected type: string")
        return value.encode("utf-8")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"JSON Value: {_show(value)} for {where} is not a number")
    return value


def _to_array(value, is_string, where):
    if not is_string:
        # Fast path: plain nested numbers convert in C; anything else (b64 objects, strings, ragged
        # lists, booleans) falls through to the checking walk below for a precise error.
        try:
            arr = np.asarray(value)
            if arr.dtype.kind in "iuf":
                return arr
        except ValueError:
            pass
    decoded = _decode_values(value, is_string, where)
    try:
        if is_string:
            arr = np.array(decoded, dtype=object)
            if arr.dtype != object or (arr.ndim and any(isinstance(x, list) for x in arr.ravel())):
                raise ValueError
            return arr
        arr = np.array(decoded)
    except ValueError:
        raise invalid(f"Encountered list at unexpected size for {where}: all rows must have the same shape") from None
    if arr.dtype == object:
        raise invalid(f"Encountered list at unexpected size for {where}: all rows must have the same shape")
    return arr


def load_json(body):
    """Request body -> JSON value, or a 400 that says why (nesting too deep included: Python's
    decoder recurses, and a RecursionError would otherwise be a 500).

    orjson parses first: on a raw-pixel body it takes about half the json module's time
    (benchmarks/bench_batching.py). What orjson refuses but the json module takes (NaN and Infinity,
    lone surrogates, nesting beyond 1024) goes to the json module, so what is accepted and the
    error messages stay as they were. One difference: orjson reads an integer beyond 64 bits as a
    float, so for an integer input it is refused as "not integers" rather than "must fit"."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid(f"JSON Parse error: {exc}") from None
    except RecursionError:
        raise invalid("JSON Parse error: nesting too deep") from None


def parse_predict_request(body, signature_of):
    """body bytes -> (signature name, {input: ndarray}, row_format). `signature_of(name)` returns
    the Signature (raising for an unknown one)."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    return parse_predict_object(load_json(body), signature_of)


def parse_predict_object(request, signature_of):
    """parse_predict_request on a request already parsed from JSON (e.g. the :search route's)."""
    if not isinstance(request, dict):
        raise invalid("JSON Parse error: the request body Is not object")
    name = request.get("signature_name", "serving_default")
    if not isinstance(name, str):
        raise invalid("'signature_name' key must be a string value.")
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances == has_inputs:
        raise invalid(
            "Missing 'inputs' or 'instances' key"
            if not has_instances
            else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists"
        )
    signature = signature_of(name)
    names = sorted(signature.inputs)
    string_inputs = {k for k, (dtype, _) in signature.inputs.items() if dtype.name == "string"}
    if has_instances:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid("'instances' must be a non-empty JSON list")
        named = isinstance(instances[0], dict) and not _is_b64(instances[0])
        if not named:
            if len(names) != 1:
                raise invalid(
                    f"signature '{name}' has {len(names)} inputs {names}: each instance must be an "
                    "object keyed by input name"
                )
            return name, {names[0]: _to_array(instances, names[0] in string_inputs, names[0])}, True
        columns = {k: [] for k in names}
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or _is_b64(inst) or set(inst) != set(names):
                raise invalid(f"instance {i} must be an object with exactly the keys {names}")
            for k in names:
                columns[k].append(inst[k])
        return name, {k: _to_array(v, k in string_inputs, k) for k, v in columns.items()}, True
    inputs = request["inputs"]
    if isinstance(inputs, dict) and not _is_b64(inputs):
        missing = [k for k in names if k not in inputs]
        if missing:
            raise invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
        return name, {k: _to_array(v, k in string_inputs, k) for k, v in inputs.items()}, False
    if len(names) != 1:
        raise invalid(f"signature '{name}' has {len(names)} inputs {names}: 'inputs' must be an object keyed by name")
    return name, {names[0]: _to_array(inputs, names[0] in string_inputs, names[0])}, False


def _jsonable(name, arr):
    if arr.dtype == object or arr.dtype.kind == "S":
        if name.endswith("_bytes"):
            return np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}, otypes=[object])(arr).tolist()
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(arr).tolist()
    return arr.tolist()


def format_predict_response(outputs, row_format):
    """{output: ndarray} -> the JSON body TF-Serving would send."""
    if not row_format:
        if len(outputs) == 1:
            ((k, v),) = outputs.items()
            return {"outputs": _jsonable(k, v)}
        return {"outputs": {k: _jsonable(k, v) for k, v in outputs.items()}}
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise invalid(f"Tensor output has inconsistent batch size for row format: {sizes}")
    if len(outputs) == 1:
        ((k, v),) = outputs.items()
        return {"predictions": _jsonable(k, v)}
    columns = {k: _jsonable(k, v) for k, v in outputs.items()}
    n = next(iter(sizes.values()))
    return {"predictions": [{k: columns[k][i] for k in columns} for i in range(n)]}
