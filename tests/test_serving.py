import base64
import http.client as httplib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import GrpcClient, RestClient, ServingClientError
from serving.server import ModelServer


@pytest.fixture(scope="module")
def model_file(trained_tiny):
    return trained_tiny


@pytest.fixture(scope="module")
def server(model_file, tmp_path_factory, digits):
    from export import export_saved_model

    base = str(tmp_path_factory.mktemp("models"))
    export_saved_model(
        model_file[1],
        base,
        "coophash",
        database_images=digits.images[200:400],
        database_ids=np.arange(200, 400),
        search_k=5,
    )
    srv = ModelServer(base, port=0, grpc_port=0, poll_interval=0.2, max_body_bytes=200_000).start()
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
    from export import export_saved_model

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
    return http(srv, "GET", "/v1/models/coophash")[1]["model_version_status"][0]["version"]


def copy_version(src, dst, names):
    os.makedirs(dst, exist_ok=True)
    for name in names:
        if os.path.isdir(os.path.join(src, name)):
            shutil.copytree(os.path.join(src, name), os.path.join(dst, name))
        else:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))


def test_version_copied_in_two_steps_is_served_once_complete(model_file, tmp_path, digits, caplog):
    from export import export_saved_model

    caplog.set_level(logging.INFO, logger="coophash.serving")
    base, staging = str(tmp_path / "models"), str(tmp_path / "staging")
    export_saved_model(model_file[1], base, "coophash", warmup=False)
    complete = export_saved_model(model_file[1], staging, "coophash", version=2, warmup=False)
    dst = os.path.join(base, "coophash", "2")
    with ModelServer(base, port=0, poll_interval=0.05, max_num_load_retries=10_000, load_retry_interval=0.05) as srv:
        copy_version(complete, dst, ["saved_model.pb"])  # step 1: the graph, no variables yet
        wait_for(lambda: srv.registry.failed_loads().get(("coophash", 2), 0) >= 2, "two failed loads of version 2")
        assert served_version(srv) == "1"
        assert http(srv, "GET", "/v1/models/coophash/versions/2")[0] == 404
        copy_version(complete, dst, [n for n in os.listdir(complete) if n != "saved_model.pb"])  # step 2
        wait_for(lambda: served_version(srv) == "2", "version 2 to be served")
        status, body = http(
            srv, "POST", "/v1/models/coophash/versions/2:predict", {"instances": digits.images[:1].tolist()}
        )
        assert status == 200 and len(body["predictions"]) == 1
    # served by a retry, not by the give-up-until-changed path
    assert not [r for r in caplog.records if "files of coophash version 2 changed" in r.getMessage()]


def test_broken_version_is_skipped_until_its_files_change(model_file, tmp_path, digits):
    from export import export_saved_model

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


def test_coophash_query_cli(server, tmp_path, digits):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"q{i}.png"))
        open(paths[-1], "wb").write(png(digits.images[i]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "coophash_keras.cli", "query", "--url", server.url, "--search", *paths],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and "code=" in lines[0] and "top_ids=" in lines[0]
    out = subprocess.run(
        [sys.executable, "-m", "coophash_keras.cli", "query", "--grpc", f"127.0.0.1:{server.grpc_port}", paths[0]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0 and "code=" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "coophash_keras.cli", "query", "--url", server.url, "--model", "nope", paths[0]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env=env,
    )
    assert out.returncode == 2 and "404" in out.stderr and "Traceback" not in out.stderr


# ------------------------------------------------------------------------------- :search route
def test_search_route_backed_by_an_index(model_file, tmp_path, digits):
    from coophash_keras.index import HammingIndex
    from coophash_keras.io import model_fingerprint
    from coophash_keras.metrics import hamming_rank
    from export import export_saved_model

    model, path = model_file
    base = str(tmp_path / "models")
    export_saved_model(path, base, "coophash", warmup=False)
    db_codes = model.encode(digits.images[500:1500], packed=True)
    index_path = str(tmp_path / "db.idx")
    HammingIndex(16, model_fingerprint(path)).add(db_codes, np.arange(500, 1500)).save(index_path)
    with ModelServer(base, port=0, indexes={"coophash": index_path}) as srv:
        status, body = http(
            srv, "POST", "/v1/models/coophash:search", {"instances": digits.images[:3].tolist(), "k": 4}
        )
        assert status == 200, body
        expected = hamming_rank(model.encode(digits.images[:3]), model.encode(digits.images[500:1500]), topk=4) + 500
        np.testing.assert_array_equal([r["ids"] for r in body["results"]], expected)
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
