import base64
import http.client as httplib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_cli_in_process
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from coophash_keras.serving.client import GrpcClient, RestClient, ServingClientError
from coophash_keras.serving.errors import ListenError
from coophash_keras.serving.server import ModelServer


@pytest.fixture(scope="module")
def model_file(trained_tiny):
    return trained_tiny


@pytest.fixture(scope="module")
def model_base(model_file, tmp_path_factory, digits):
    """A model base (--model-base) holding the trained model exported with a database, exported once:
    the `server`s copy it, and the tests that start servers of their own read it."""
    from coophash_keras.export import export_saved_model

    base = str(tmp_path_factory.mktemp("models"))
    export_saved_model(
        model_file[1],
        base,
        "coophash",
        database_images=digits.images[200:400],
        database_ids=np.arange(200, 400),
        search_k=5,
    )
    return base


@pytest.fixture(scope="module", params=["alone", "batching"])
def server(request, model_base, tmp_path_factory):
    """The server every REST and gRPC conformance test below runs against: once with each request
    run on its own, once with --enable_batching and the shipped serving/config/batching.config.
    Each serves its own copy of `model_base`."""
    from coophash_keras.serving.batching_config import read_batching_parameters

    base = str(tmp_path_factory.mktemp("served") / "models")
    shutil.copytree(model_base, base)
    batching = None
    if request.param == "batching":
        batching = read_batching_parameters(os.path.join(REPO, "serving", "config", "batching.config"))
    srv = ModelServer(
        base, port=0, grpc_port=0, poll_interval=0.2, max_body_bytes=200_000, batching_parameters=batching
    ).start()
    yield srv
    srv.stop()


def http(server, method, path, body=None, headers=None):
    conn = httplib.HTTPConnection(server.host, server.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw


def png(image):
    buf = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def assert_still_serving(server, digits):
    status, body = http(server, "POST", "/v1/models/coophash:predict", {"instances": digits.images[:1].tolist()})
    assert status == 200 and len(body["predictions"]) == 1


# ------------------------------------------------------------------------------------- REST
def test_rest_status_and_metadata(server):
    status, body = http(server, "GET", "/v1/models/coophash")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert http(server, "GET", "/v1/models/coophash/versions/1")[0] == 200
    status, body = http(server, "GET", "/v1/models/coophash/metadata")
    assert status == 200 and body["model_spec"] == {"name": "coophash", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "hash_image_bytes", "search"} <= set(sigs)
    images = sigs["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8" and [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_rest_predict_row_and_columnar(server, model_file, digits):
    model = model_file[0]
    images = digits.images[:4]
    status, body = http(server, "POST", "/v1/models/coophash:predict", {"instances": images.tolist()})
    assert status == 200 and len(body["predictions"]) == 4
    assert set(body["predictions"][0]) == {"codes", "packed", "energy", "class_probs"}
    np.testing.assert_array_equal([p["codes"] for p in body["predictions"]], model.encode(images))
    status, body = http(
        server,
        "POST",
        "/v1/models/coophash/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"images": images.tolist()}},
    )
    assert status == 200
    np.testing.assert_array_equal(body["outputs"]["packed"], model.encode(images, packed=True))
    np.testing.assert_allclose(np.sum(body["outputs"]["class_probs"], axis=1), 1.0, atol=1e-5)


def test_rest_b64_images_and_search(server, model_file, digits):
    model = model_file[0]
    instances = [{"b64": base64.b64encode(png(im)).decode()} for im in digits.images[:3]]
    status, body = http(
        server, "POST", "/v1/models/coophash:predict", {"signature_name": "hash_image_bytes", "instances": instances}
    )
    assert status == 200
    np.testing.assert_array_equal([p["codes"] for p in body["predictions"]], model.encode(digits.images[:3]))
    status, body = http(
        server,
        "POST",
        "/v1/models/coophash:predict",
        {"signature_name": "search", "instances": digits.images[:2].tolist()},
    )
    assert status == 200
    ids = [p["ids"] for p in body["predictions"]]
    assert np.array(ids).shape == (2, 5) and all(200 <= i < 400 for row in ids for i in row)
    dist = [p["distances"] for p in body["predictions"]]
    assert all(row == sorted(row) for row in dist)


def test_rest_client(server, model_file, digits):
    client = RestClient(server.url, "coophash")
    out = client.hash_images(digits.images[:3])
    np.testing.assert_array_equal(out["codes"], model_file[0].encode(digits.images[:3]))
    out = client.hash_image_files([png(im) for im in digits.images[:3]])
    np.testing.assert_array_equal(out["codes"], model_file[0].encode(digits.images[:3]))
    with pytest.raises(ServingClientError) as err:
        RestClient(server.url, "nope").status()
    assert err.value.status == 404


BAD_REQUESTS = [
    ("POST", "/v1/models/coophash:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/coophash:predict", b"", 400, "empty"),
    ("POST", "/v1/models/coophash:predict", b"[1, 2]", 400, "Is not object"),
    ("POST", "/v1/models/coophash:predict", {"instances": [[[1, 2]]]}, 400, "must have shape [-1, 8, 8, 1]"),
    ("POST", "/v1/models/coophash:predict", {"instances": [[[[0.5]] * 8] * 8]}, 400, "uint8"),
    ("POST", "/v1/models/coophash:predict", {"instances": [[[[300]] * 8] * 8]}, 400, "fit uint8"),
    ("POST", "/v1/models/coophash:predict", {"instances": [[[["a"]] * 8] * 8]}, 400, "not a number"),
    ("POST", "/v1/models/coophash:predict", {"instances": [{"b64": "AAAA"}]}, 400, "only accepted for DT_STRING"),
    (
        "POST",
        "/v1/models/coophash:predict",
        {"signature_name": "hash_image_bytes", "instances": [{"b64": base64.b64encode(b"not an image").decode()}]},
        400,
        "image",
    ),
    (
        "POST",
        "/v1/models/coophash:predict",
        {"signature_name": "hash_image_bytes", "instances": [{"b64": "%%%"}]},
        400,
        "base64",
    ),
    ("POST", "/v1/models/coophash:predict", {"signature_name": "nope", "instances": [1]}, 400, "not found"),
    (
        "POST",
        "/v1/models/coophash:predict",
        {
            "instances": [],
        },
        400,
        "non-empty",
    ),
    ("POST", "/v1/models/coophash:predict", {"instances": [1], "inputs": [1]}, 400, "only one of"),
    ("POST", "/v1/models/coophash:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances'"),
    ("POST", "/v1/models/coophash:predict", {"inputs": {"imagez": [1]}}, 400, "Missing named input"),
    ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found"),
    ("POST", "/v1/models/coophash/versions/7:predict", {"instances": [1]}, 404, "Servable not found"),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/coophash/versions/7", None, 404, "Could not find version 7"),
    ("GET", "/v1/models/coophash/versions/7/metadata", None, 404, "Servable not found"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("GET", "/v1/models/coophash/foo", None, 400, "Malformed request"),
    ("POST", "/v1/models/coophash:classify", {"examples": []}, 400, "predict signatures only"),
    ("GET", "/v1/models/coophash/labels/stable", None, 400, "Unrecognized servable version label"),
    ("POST", "/v1/models/coophash:predict", b"x" * 300_000, 413, "exceeds the limit"),
    # found by benchmarks/fuzz_rest.py: deep nesting was a RecursionError, a 500
    ("POST", "/v1/models/coophash:predict", b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "too deep"),
    ("POST", "/v1/models/coophash:predict", b'{"inputs": ' + b"[" * 900 + b"]" * 900 + b"}", 400, "deeper than 64"),
    (
        "POST",
        "/v1/models/coophash:predict",
        b'{"instances": [[' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"]]}",
        400,
        "JSON Value",
    ),
]


@pytest.mark.parametrize("method,path,body,status,match", BAD_REQUESTS)
def test_rest_bad_requests_get_json_errors_and_server_keeps_serving(server, digits, method, path, body, status, match):
    got, payload = http(server, method, path, body)
    assert got == status, payload
    assert isinstance(payload, dict) and set(payload) == {"error"}, payload
    assert match in payload["error"]
    assert_still_serving(server, digits)


def test_non_v1_path_is_plain_404(server):
    status, body = http(server, "GET", "/healthz")
    assert status == 404 and isinstance(body, bytes)


def test_concurrent_rest_requests(server, digits):
    errors, done = [], []

    def worker(i):
        try:
            for _j in range(10):
                status, body = http(
                    server, "POST", "/v1/models/coophash:predict", {"instances": digits.images[i : i + 2].tolist()}
                )
                if status != 200:
                    errors.append(body)
            done.append(i)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(done) == 8


# ------------------------------------------------------------------------------------- gRPC
@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel), model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def predict_request(signature, key, value, dtype=None, name="coophash"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    req.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return req


def test_grpc_predict_every_signature(stubs, model_file, digits):
    predictions, _ = stubs
    model = model_file[0]
    resp = predictions.Predict(predict_request("serving_default", "images", digits.images[:3]), timeout=30)
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["codes"]), model.encode(digits.images[:3]))
    assert resp.model_spec.version.value == 1 and resp.model_spec.signature_name == "serving_default"
    resp = predictions.Predict(
        predict_request("hash_image_bytes", "image_bytes", [png(im) for im in digits.images[:3]], tf.string), timeout=30
    )
    np.testing.assert_array_equal(tf.make_ndarray(resp.outputs["codes"]), model.encode(digits.images[:3]))
    req = predict_request("search", "images", digits.images[:2])
    req.output_filter.append("ids")
    resp = predictions.Predict(req, timeout=30)
    assert set(resp.outputs) == {"ids"} and tf.make_ndarray(resp.outputs["ids"]).shape == (2, 5)


def test_grpc_metadata_and_status(stubs):
    predictions, models = stubs
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "coophash"
    resp = predictions.GetModelMetadata(req, timeout=30)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigmap)
    assert {"serving_default", "hash_image_bytes", "search"} <= set(sigmap.signature_def)
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "coophash"
    status = models.GetModelStatus(sreq, timeout=30)
    assert status.model_version_status[0].version == 1
    assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize(
    "make,code",
    [
        (lambda d: predict_request("serving_default", "images", d.images[:1], name="nope"), grpc.StatusCode.NOT_FOUND),
        (lambda d: predict_request("nope", "images", d.images[:1]), grpc.StatusCode.FAILED_PRECONDITION),
        (lambda d: predict_request("serving_default", "images", d.images[:1, :4]), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda d: predict_request("serving_default", "images", d.images[:1].astype(np.float32)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda d: predict_request("serving_default", "imagez", d.images[:1]), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda d: predict_request("hash_image_bytes", "image_bytes", [b"junk"], tf.string),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
def test_grpc_errors(stubs, digits, make, code):
    predictions, _ = stubs
    with pytest.raises(grpc.RpcError) as err:
        predictions.Predict(make(digits), timeout=30)
    assert err.value.code() == code
    resp = predictions.Predict(predict_request("serving_default", "images", digits.images[:1]), timeout=30)
    assert "codes" in resp.outputs


def test_grpc_client(server, model_file, digits):
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "coophash")
    out = client.predict({"image_bytes": [png(im) for im in digits.images[:2]]}, "hash_image_bytes")
    np.testing.assert_array_equal(out["codes"], model_file[0].encode(digits.images[:2]))
    assert client.status().model_version_status[0].version == 1
    client.close()


# ------------------------------------------------------------------------------- versions, CLI
def test_new_version_is_picked_up_without_restart(model_file, tmp_path, digits):
    from coophash_keras.export import export_saved_model

    base = str(tmp_path / "models")
    export_saved_model(model_file[1], base, "coophash", warmup=False)
    with ModelServer(base, port=0, poll_interval=0.1) as srv:
        assert http(srv, "GET", "/v1/models/coophash")[1]["model_version_status"][0]["version"] == "1"
        export_saved_model(model_file[1], base, "coophash")  # version 2
        deadline = time.time() + 60
        while time.time() < deadline:
            body = http(srv, "GET", "/v1/models/coophash")[1]
            if body["model_version_status"][0]["version"] == "2":
                break
            time.sleep(0.1)
        assert body["model_version_status"][0]["version"] == "2"
        status, body = http(
            srv, "POST", "/v1/models/coophash/versions/2:predict", {"instances": digits.images[:1].tolist()}
        )
        assert status == 200


def wait_for(condition, what, timeout=120):
    """Poll `condition` until true; the timeout only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def served_version(srv):
    """The AVAILABLE version (the status lists failed and loading versions too, newest first)."""
    states = http(srv, "GET", "/v1/models/coophash")[1]["model_version_status"]
    return next(s["version"] for s in states if s["state"] == "AVAILABLE")


def copy_version(src, dst, names):
    os.makedirs(dst, exist_ok=True)
    for name in names:
        if os.path.isdir(os.path.join(src, name)):
            shutil.copytree(os.path.join(src, name), os.path.join(dst, name))
        else:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def test_version_copied_in_two_steps_is_served_once_complete(model_file, tmp_path, digits, caplog):
    from coophash_keras.export import export_saved_model

    caplog.set_level(logging.INFO, logger="coophash.serving")
    base, staging = str(tmp_path / "models"), str(tmp_path / "staging")
    export_saved_model(model_file[1], base, "coophash", warmup=False)
    complete = export_saved_model(model_file[1], staging, "coophash", version=2, warmup=False)
    dst = os.path.join(base, "coophash", "2")
    with ModelServer(base, port=0, poll_interval=0.05, max_num_load_retries=10_000, load_retry_interval=0.05) as srv:
        copy_version(complete, dst, ["saved_model.pb"])  # step 1: the graph, no variables yet
        wait_for(lambda: srv.registry.failed_loads().get(("coophash", 2), 0) >= 2, "two failed loads of version 2")
        assert served_version(srv) == "1"
        # retries left: LOADING, as TF-Serving reports a version its loader harness is retrying
        status, body = http(srv, "GET", "/v1/models/coophash/versions/2")
        assert status == 200 and body["model_version_status"][0]["state"] == "LOADING"
        assert http(srv, "POST", "/v1/models/coophash/versions/2:predict", {"instances": [[[[0]] * 8] * 8]})[0] == 404
        copy_version(complete, dst, [n for n in os.listdir(complete) if n != "saved_model.pb"])  # step 2
        wait_for(lambda: served_version(srv) == "2", "version 2 to be served")
        status, body = http(
            srv, "POST", "/v1/models/coophash/versions/2:predict", {"instances": digits.images[:1].tolist()}
        )
        assert status == 200 and len(body["predictions"]) == 1
    # served by a retry, not by the give-up-until-changed path
    assert not [r for r in caplog.records if "files of coophash version 2 changed" in r.getMessage()]


def test_broken_version_is_skipped_until_its_files_change(model_file, tmp_path, digits):
    from coophash_keras.export import export_saved_model

    base, staging = str(tmp_path / "models"), str(tmp_path / "staging")
    export_saved_model(model_file[1], base, "coophash", warmup=False)
    good = export_saved_model(model_file[1], staging, "coophash", version=2, warmup=False)
    broken = os.path.join(base, "coophash", "2")
    with ModelServer(base, port=0, poll_interval=0.05, max_num_load_retries=2, load_retry_interval=0.05) as srv:
        os.makedirs(broken)
        with open(os.path.join(broken, "saved_model.pb"), "wb") as fh:
            fh.write(b"garbage")
        # the poller tried it 1 + 2 times and gave up: version 1 still answers
        wait_for(lambda: srv.registry.gave_up("coophash", 2), "the registry to give up on version 2")
        assert srv.registry.failed_loads()[("coophash", 2)] == 3
        assert served_version(srv) == "1"
        assert_still_serving(srv, digits)
        time.sleep(0.5)  # ten more polls: given up means no more attempts
        assert srv.registry.failed_loads()[("coophash", 2)] == 3
        # its files change (a complete copy replaces the garbage): tried again, and served
        os.remove(os.path.join(broken, "saved_model.pb"))
        copy_version(good, broken, os.listdir(good))
        wait_for(lambda: served_version(srv) == "2", "version 2 to be served after its files changed")
        assert_still_serving(srv, digits)


def test_broken_versions_are_reported_in_status_and_the_old_one_keeps_answering(model_file, tmp_path, digits):
    """A garbage saved_model.pb (version 2), then a truncated variables file (version 3): each is
    END with its error in the status API, REST and gRPC, as TF-Serving reports a failed load,
    while version 1 keeps answering."""
    from coophash_keras.export import export_saved_model

    base, staging = str(tmp_path / "models"), str(tmp_path / "staging")
    export_saved_model(model_file[1], base, "coophash", warmup=False)
    good = export_saved_model(model_file[1], staging, "coophash", version=3, warmup=False)
    ok = {"error_code": "OK", "error_message": ""}
    with ModelServer(
        base, port=0, grpc_port=0, poll_interval=0.05, max_num_load_retries=1, load_retry_interval=0.05
    ) as srv:
        os.makedirs(os.path.join(base, "coophash", "2"))
        with open(os.path.join(base, "coophash", "2", "saved_model.pb"), "wb") as fh:
            fh.write(b"garbage")
        wait_for(lambda: srv.registry.gave_up("coophash", 2), "the registry to give up on version 2")
        status, body = http(srv, "GET", "/v1/models/coophash")
        assert status == 200
        v2, v1 = body["model_version_status"]
        assert v1 == {"version": "1", "state": "AVAILABLE", "status": ok}
        assert v2["version"] == "2" and v2["state"] == "END" and v2["status"]["error_code"] == "DATA_LOSS"
        assert "saved_model.pb" in v2["status"]["error_message"]
        assert http(srv, "GET", "/v1/models/coophash/versions/2")[1] == {"model_version_status": [v2]}
        assert_still_serving(srv, digits)

        truncated = os.path.join(staging, "coophash", "3", "variables", "variables.data-00000-of-00001")
        os.truncate(truncated, os.path.getsize(truncated) // 2)
        shutil.copytree(good, os.path.join(base, "coophash", "3"))
        wait_for(lambda: srv.registry.gave_up("coophash", 3), "the registry to give up on version 3")
        states = http(srv, "GET", "/v1/models/coophash")[1]["model_version_status"]
        assert [(s["version"], s["state"]) for s in states] == [("3", "END"), ("2", "END"), ("1", "AVAILABLE")]
        assert states[0]["status"]["error_code"] != "OK" and states[0]["status"]["error_message"]
        assert_still_serving(srv, digits)

        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "coophash"
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
        channel.close()
        assert [(s.version, s.state) for s in reply.model_version_status] == [
            (3, get_model_status_pb2.ModelVersionStatus.END),
            (2, get_model_status_pb2.ModelVersionStatus.END),
            (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        ]
        assert reply.model_version_status[1].status.error_message == v2["status"]["error_message"]


def test_coophash_query_cli(server, tmp_path, digits):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"q{i}.png"))
        open(paths[-1], "wb").write(png(digits.images[i]))
    out = run_cli_in_process(["query", "--url", server.url, "--search", *paths])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "code=" in lines[0] and "top_ids=" in lines[0]
    rest_lines = lines
    out = run_cli_in_process(["query", "--grpc", f"127.0.0.1:{server.grpc_port}", "--search", *paths])
    # gRPC searches too (search_image_bytes), with the same answer as REST
    assert out.returncode == 0 and out.stdout.strip().splitlines() == rest_lines, out.stderr[-2000:]
    out = run_cli_in_process(["query", "--url", server.url, "--model", "nope", paths[0]])
    assert out.returncode == 2 and "404" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------- :search route
def test_search_route_backed_by_an_index(model_file, tmp_path, digits):
    from coophash_keras.export import export_saved_model
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import model_fingerprint
    from coophash_keras.metrics import hamming_rank

    model, path = model_file
    base = str(tmp_path / "models")
    export_saved_model(path, base, "coophash", warmup=False)
    db_codes = model.encode(digits.images[500:1500], packed=True)
    index_path = str(tmp_path / "db.idx")
    db_paths = [f"digits/{i}.png" for i in range(500, 1500)]
    HammingIndex(16, model_fingerprint(path)).add(db_codes, np.arange(500, 1500), db_paths).save(index_path)
    with ModelServer(base, port=0, indexes={"coophash": index_path}) as srv:
        status, body = http(
            srv, "POST", "/v1/models/coophash:search", {"instances": digits.images[:3].tolist(), "k": 4}
        )
        assert status == 200, body
        expected = hamming_rank(model.encode(digits.images[:3]), model.encode(digits.images[500:1500]), topk=4) + 500
        np.testing.assert_array_equal([r["ids"] for r in body["results"]], expected)
        assert [r["paths"] for r in body["results"]] == [[f"digits/{i}.png" for i in row] for row in expected]
        np.testing.assert_array_equal([r["codes"] for r in body["results"]], model.encode(digits.images[:3]))
        b64 = [{"b64": base64.b64encode(png(im)).decode()} for im in digits.images[:2]]
        status, body = http(srv, "POST", "/v1/models/coophash:search", {"instances": b64, "k": 4})
        assert status == 200 and [r["ids"] for r in body["results"]] == expected[:2].tolist()
        for bad, code, match in [
            ({"instances": digits.images[:1].tolist(), "k": 0}, 400, "k must be"),
            ({"instances": digits.images[:1].tolist(), "k": 5000}, 400, "k must be"),
            ({"k": 3}, 400, "instances"),
            ({"instances": [[1, 2]]}, 400, "shape"),
        ]:
            status, body = http(srv, "POST", "/v1/models/coophash:search", bad)
            assert status == code and match in body["error"], body
        status, body = http(srv, "POST", "/v1/models/other:search", {"instances": [1]})
        assert status == 404
    # an index built by another model is refused at start-up
    other = str(tmp_path / "other.idx")
    HammingIndex(16, "0123456789abcdef").add(db_codes).save(other)
    with pytest.raises(ValueError, match="rebuild the index"):
        ModelServer(base, port=0, indexes={"coophash": other})
    # an index without paths answers without them
    HammingIndex(16, model_fingerprint(path)).add(db_codes).save(other)
    with ModelServer(base, port=0, indexes={"coophash": other}) as srv:
        status, body = http(srv, "POST", "/v1/models/coophash:search", {"instances": digits.images[:1].tolist()})
        assert status == 200 and "paths" not in body["results"][0] and len(body["results"][0]["ids"]) == 10


def test_search_route_backed_by_milvus(model_file, tmp_path, digits):
    """The same route over a Milvus collection (milvus-lite here; a cluster changes the URI only)."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from coophash_keras.export import export_saved_model
    from coophash_keras.index import HammingIndex, MilvusIndex
    from coophash_keras.io import model_fingerprint

    model, path = model_file
    base = str(tmp_path / "models")
    export_saved_model(path, base, "coophash", warmup=False)
    exact = HammingIndex(16, model_fingerprint(path))
    exact.add(
        model.encode(digits.images[500:900], packed=True), np.arange(500, 900), [f"{i}.png" for i in range(500, 900)]
    )
    uri = str(tmp_path / "milvus.db")
    MilvusIndex.export(exact, uri, "digits").close()
    with ModelServer(base, port=0, indexes={"coophash": f"milvus:{uri}#digits"}) as srv:
        status, body = http(
            srv, "POST", "/v1/models/coophash:search", {"instances": digits.images[:3].tolist(), "k": 5}
        )
        assert status == 200, body
        ids, distances = exact.search(model.encode(digits.images[:3], packed=True), 5)
        assert [r["distances"] for r in body["results"]] == distances.tolist()
        for r in body["results"]:
            assert r["paths"] == [f"{i}.png" for i in r["ids"]]
        status, body = http(
            srv, "POST", "/v1/models/coophash:search", {"instances": digits.images[:1].tolist(), "k": 401}
        )
        assert status == 400 and "k must be" in body["error"]
    stale = HammingIndex(16, "0123456789abcdef").add(model.encode(digits.images[:10], packed=True))
    MilvusIndex.export(stale, uri, "stale").close()
    with pytest.raises(ValueError, match="rebuild the index"):
        ModelServer(base, port=0, indexes={"coophash": f"milvus:{uri}#stale"})


# ------------------------------------------------------------------- hostile and slow clients
def raw_exchange(srv, data, timeout=60):
    """Send raw bytes on one connection; return all the server sends until it closes. The
    timeout only guards against a hang (a server that never closes fails the test)."""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


EMBEDDED = b"GET /v1/models/coophash HTTP/1.1\r\nHost: x\r\n\r\n"
PREDICT = b"POST /v1/models/coophash:predict HTTP/1.1\r\nHost: x\r\n"
FRAMING_ERRORS = [
    (PREDICT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + EMBEDDED, 400),  # bad chunk size
    (PREDICT + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{}   XX" + EMBEDDED, 400),  # no CRLF after data
    (PREDICT + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + EMBEDDED, 400),
    (PREDICT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + EMBEDDED, 400),
    (PREDICT + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + EMBEDDED, 400),
    (PREDICT + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}" + EMBEDDED, 400),
    (PREDICT + b"Content-Length: -2\r\n\r\n{}" + EMBEDDED, 400),
    (PREDICT + b"Content-Length: 2x\r\n\r\n{}" + EMBEDDED, 400),
    (PREDICT + b"Content-Length: +2\r\n\r\n{}" + EMBEDDED, 400),
    (PREDICT + b"\r\n" + EMBEDDED, 400),  # a POST body with no length at all
    (PREDICT + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n" + EMBEDDED, 431),
    (PREDICT + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n" + EMBEDDED, 431),
    (PREDICT + b"Content-Length: 2\r\n folded\r\n\r\n{}" + EMBEDDED, 400),  # obs-fold
    (PREDICT + b"Content-Length : 2\r\n\r\n{}" + EMBEDDED, 400),  # space before the colon
    (b"GET /v1/models/coophash HTTP/2.0\r\n\r\n" + EMBEDDED, 400),
    (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n" + EMBEDDED, 400),  # TLS hello
]


@pytest.mark.parametrize("data,status", FRAMING_ERRORS)
def test_framing_error_is_answered_then_the_connection_closed(server, digits, data, status):
    """Request smuggling: after a framing error nothing that follows is read as a request."""
    out = raw_exchange(server, data)
    assert out.startswith(b"HTTP/1.1 %d " % status), out[:200]
    assert len(re.findall(rb"HTTP/1\.1 \d{3} ", out)) == 1, out  # the embedded GET was not answered
    assert b"Connection: close" in out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1]).keys() == {"error"}
    assert_still_serving(server, digits)


def test_chunked_requests_are_framed_correctly(server, model_file, digits):
    body = json.dumps({"instances": digits.images[:2].tolist()}).encode()
    chunked = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100]) for i in range(0, len(body), 100)
    )
    # on one connection: a chunked predict, then a chunked body that *contains* a request, then a
    # real one (each sent once the previous answer is read: HTTPResponse buffers ahead)
    requests = [
        PREDICT + b"Transfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nTrailer: 1\r\n\r\n",
        PREDICT + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(EMBEDDED), EMBEDDED),
        EMBEDDED,
    ]
    responses = []
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        for request in requests:
            sock.sendall(request)
            resp = httplib.HTTPResponse(sock)
            resp.begin()
            responses.append((resp.status, json.loads(resp.read())))
    assert responses[0][0] == 200
    np.testing.assert_array_equal(
        [p["codes"] for p in responses[0][1]["predictions"]], model_file[0].encode(digits.images[:2])
    )
    assert responses[1][0] == 400 and "JSON Parse error" in responses[1][1]["error"]  # the body, not a request
    assert responses[2][0] == 200 and "model_version_status" in responses[2][1]


def parse_all(data, step):
    """serving/http11.py RequestParser over `data` fed `step` bytes at a time, then its end ->
    what next() gave, in order (NEED_DATA left out), ending with the end or the FramingError."""
    from coophash_keras.serving.http11 import END, NEED_DATA, FramingError, IncompleteRequest, RequestParser

    parser, events = RequestParser(max_body_bytes=1 << 20), []
    try:
        for i in range(0, len(data), step):
            parser.feed(data[i : i + step])
            while (event := parser.next()) is not NEED_DATA:
                events.append(event)
        parser.feed_eof()
        while (event := parser.next()) is not END:
            events.append(event)
        events.append(END)
    except FramingError as exc:
        events.append((exc.status, exc.message))
    except IncompleteRequest:
        events.append("incomplete")
    return events, parser.buffered()  # what was fed and not used (after an error: as much as came)


PIPELINED = (
    b"\r\n"  # an empty line before a request line is ignored
    + PREDICT
    + b"Content-Length: 2\r\nExpect: 100-continue\r\n\r\n{}"
    + PREDICT
    + b'Transfer-Encoding: chunked\r\n\r\n3;x=1\r\n{"a\r\n2\r\n":\r\n0\r\nTrailer: 1\r\n\r\n'
    + b"GET /v1/models/coophash HTTP/1.0\nConnection: keep-alive\n\n"  # bare LFs
    + b"HEAD /v1/models/coophash HTTP/1.1\r\nConnection: close\r\n\r\n"
)


@pytest.mark.parametrize("data", [PIPELINED] + [data for data, _ in FRAMING_ERRORS] + [PIPELINED[:-3], b"GET /v1/mod"])
def test_requests_fed_a_byte_at_a_time_frame_as_fed_whole(data):
    """The sans-IO parser meets the same rules in the same order however the bytes arrive."""
    from coophash_keras.serving.http11 import CONTINUE, END, Request

    whole, left = parse_all(data, len(data))
    assert parse_all(data, 1)[0] == whole
    if data is PIPELINED:
        requests = [e for e in whole if isinstance(e, Request)]
        assert whole[0] is CONTINUE and whole[-1] is END and left == 0  # nothing kept once read
        assert [(r.method, r.body, r.keep_alive) for r in requests] == [
            ("POST", b"{}", True),
            ("POST", b'{"a":', True),
            ("GET", b"", True),
            ("HEAD", b"", False),
        ]


def test_pipelined_requests_in_one_packet_are_answered_in_order(server, digits):
    body = json.dumps({"instances": digits.images[:1].tolist()}).encode()
    predict = PREDICT + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    bad = PREDICT + b"Content-Length: 2\r\n\r\n{}"
    missing = b"GET /v1/models/nothing HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /v1/models/coophash HTTP/1.1\r\nConnection: close\r\n\r\n"
    out = raw_exchange(server, predict + EMBEDDED + bad + predict + missing + last)
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert statuses == [200, 200, 400, 200, 404, 200], out[:2000]
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in re.split(rb"(?=HTTP/1\.1 \d{3} )", out)[1:]]
    assert "predictions" in bodies[0] and "model_version_status" in bodies[1] and "predictions" in bodies[3]
    assert bodies[0] == bodies[3]
    assert out.count(b"Connection: close") == 1


def test_stalled_clients_do_not_starve_the_server_and_are_closed(model_base, digits, caplog):
    caplog.set_level(logging.DEBUG, logger="coophash.serving")
    line = b"POST /v1/models/coophash:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
    partials = [
        b"GET /v1/mod",  # half a request line
        b"GET /v1/models/coophash HTTP/1.1\r\nHost: x\r\n",  # headers never end
        line + b"\r\n" + b'{"instances": [',  # a tenth of the body
        PREDICT + b"Transfer-Encoding: chunked\r\n\r\n10\r\n0123",  # half a chunk
        line + b"Expect: 100-continue\r\n\r\n",  # asks, then never sends
    ]
    with ModelServer(model_base, port=0, read_timeout=1.0, rest_api_num_threads=2) as srv:
        stalled = []
        for i in range(150):
            sock = socket.create_connection((srv.host, srv.port), timeout=60)
            sock.sendall(partials[i % len(partials)])
            stalled.append(sock)
        # 150 stalled connections against 2 worker threads: a good client is still answered
        assert_still_serving(srv, digits)
        assert http(srv, "GET", "/v1/models/coophash")[0] == 200
        # and every stalled one is closed by the server after the read timeout (1 s)
        for sock in stalled:
            try:
                rest = b""
                while chunk := sock.recv(65536):
                    rest += chunk
                assert rest in (b"", b"HTTP/1.1 100 Continue\r\n\r\n"), rest
            except ConnectionResetError:
                pass
            sock.close()
        # clients that vanish mid-request (a TCP reset) are one quiet line each
        for _ in range(20):
            sock = socket.create_connection((srv.host, srv.port), timeout=60)
            sock.sendall(line + b"\r\n{")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        assert_still_serving(srv, digits)
    ours = [r for r in caplog.records if r.name == "coophash.serving"]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.WARNING], [r.getMessage() for r in ours]
    assert sum("no complete request" in r.getMessage() for r in ours) >= 150
    assert not [r for r in caplog.records if r.exc_info]  # no traceback from asyncio either


def test_half_closing_a_connection_the_client_already_reset_is_quiet(caplog):
    # benchmarks/fuzz_rest.py found it: an error answer was written, then the client's reset arrived
    # before the half-close, and shutdown(SHUT_WR) raised ENOTCONN out of the connection as a traceback.
    # A transport whose write_eof fails so, on the frontend's own loop: the answer is written, the
    # connection closed, nothing logged above DEBUG.
    import asyncio
    import errno

    from coophash_keras.serving.connection import RestConnection
    from coophash_keras.serving.frontend import RestFrontend, listen

    class ResetTransport(asyncio.Transport):
        def __init__(self):
            super().__init__()
            self.written, self.closed = b"", False

        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 9) if name == "peername" else default

        def write(self, data):
            self.written += data

        def can_write_eof(self):
            return True

        def write_eof(self):
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

        def get_write_buffer_size(self):
            return 0

        def is_closing(self):
            return self.closed

        def close(self):
            self.closed = True

        abort = close

    async def exchange():
        connection, transport = RestConnection(frontend), ResetTransport()
        connection.connection_made(transport)
        connection.data_received(b"GET /v1/models/coophash HTTP/2.0\r\n\r\n")
        connection.connection_lost(None)
        return transport

    caplog.set_level(logging.DEBUG, logger="coophash.serving")
    frontend = RestFrontend(app=None, sock=listen("127.0.0.1", 0, "REST"), max_body_bytes=1024, read_timeout=1.0)
    frontend.start()
    try:
        transport = asyncio.run_coroutine_threadsafe(exchange(), frontend._loop).result(10)
    finally:
        frontend.stop()
    assert transport.written.startswith(b"HTTP/1.1 400 ") and transport.closed
    assert not frontend.connections
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


def test_results_set_from_another_thread_wake_every_waiter_once_per_burst():
    # serving/frontend.py _Wakeups: a batch thread sets its requests' futures in a row; every
    # waiter's callback runs on the loop, and the loop is woken for the burst, not for each future
    import asyncio
    from concurrent.futures import Future

    from coophash_keras.serving.frontend import _Wakeups

    async def main():
        loop = asyncio.get_running_loop()
        wakeups = _Wakeups(loop)
        flushes = []
        flush = wakeups._flush
        wakeups._flush = lambda: (flushes.append(1), flush())
        futures = [Future() for _ in range(50)]
        called = []
        for i, f in enumerate(futures):
            wakeups.call_when_done(f, lambda i=i: called.append((i, asyncio.get_running_loop() is loop)))
        done = Future()
        done.set_result(1)
        wakeups.call_when_done(done, lambda: called.append((50, True)))  # already done: called all the same
        setter = threading.Thread(target=lambda: [f.set_result(i) for i, f in enumerate(futures)])
        setter.start()
        for _ in range(1000):
            if len(called) == 51:
                break
            await asyncio.sleep(0.01)
        setter.join()
        assert sorted(called) == [(i, True) for i in range(51)]  # each once, on the loop
        assert [f.result() for f in futures] == list(range(50))
        assert 1 <= len(flushes) < 10, len(flushes)
        pending = Future()
        call = wakeups.call_when_done(pending, lambda: called.append("cancelled"))
        call.cancel()  # the connection is gone before its future is set: no call, no error
        pending.set_result(1)
        await asyncio.sleep(0.01)
        assert "cancelled" not in called

    asyncio.run(main())


def test_read_deadline_follows_the_last_set_and_fires_only_when_it_passes():
    # serving/frontend.py _Deadline: set() again before the timer fires moves the deadline; the
    # timer armed for the old one re-arms instead of cancelling; clear() stops it
    import asyncio

    from coophash_keras.serving.frontend import _Deadline

    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        deadline = _Deadline(loop, lambda: fired.append(loop.time()))
        start = loop.time()
        deadline.set(0.2)
        await asyncio.sleep(0.1)
        deadline.set(0.3)  # now due at ~0.4 s from start, not 0.2
        await asyncio.sleep(0.15)  # past the first timer
        assert not fired
        deadline.clear()
        await asyncio.sleep(0.3)  # past the second: cleared, nothing happens
        assert not fired
        deadline.set(0.1)
        for _ in range(500):
            if fired:
                break
            await asyncio.sleep(0.01)
        assert len(fired) == 1 and 0.6 <= fired[0] - start < 2.5
        deadline.close()

    asyncio.run(main())


def test_connections_beyond_the_limit_are_closed_at_once(model_base, digits):
    with ModelServer(model_base, port=0, read_timeout=30.0, max_connections=5) as srv:
        held = [socket.create_connection((srv.host, srv.port), timeout=60) for _ in range(5)]
        for sock in held:
            sock.sendall(b"GET /v1/models/coophash HTTP/1.1\r\n")  # stalls, holds its slot
        # the sixth is answered 503 and closed before it sends anything
        assert raw_exchange(srv, b"").startswith(b"HTTP/1.1 503 ")
        for sock in held:
            sock.close()
        wait_for(lambda: http(srv, "GET", "/v1/models/coophash")[0] == 200, "a free connection slot")


def test_port_in_use_is_one_clear_line(model_base, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ListenError, match=f"REST port {port} on 127.0.0.1 is already in use"):
            ModelServer(model_base, port=port)
        with pytest.raises(ListenError, match=f"gRPC port {port} on 127.0.0.1 is already in use"):
            ModelServer(model_base, port=0, grpc_port=port)


def test_coophash_serve_logs_its_start_and_refuses_a_busy_port(model_base, capsys):
    """`coophash serve` shows its INFO start-up line by default; a second one on the same port
    exits 2 with one line naming the port."""
    from coophash_keras.cli import main

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "coophash_keras.cli", "serve", "--model-base", model_base]
    first = subprocess.Popen(
        [*cmd, "--port", str(port), "--grpc-port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(first.stderr.readline, "")), daemon=True)
        reader.start()
        wait_for(lambda: any("REST on" in ln for ln in lines) or first.poll() is not None, "the start-up line", 300)
        started = [ln for ln in lines if "REST on" in ln]
        assert started and " INFO " in started[0] and f"127.0.0.1:{port}" in started[0], lines
        capsys.readouterr()
        assert main(["serve", "--model-base", model_base, "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err == f"coophash serve: error: REST port {port} on 127.0.0.1 is already in use\n"
    finally:
        first.terminate()
        first.wait(timeout=60)
