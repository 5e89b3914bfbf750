"""Server-side batching (serving/batcher.py, serving/batching_config.py): TF-Serving's parameters
file, the queue's rules on a stand-in signature, and the served model under concurrent load."""

import base64
import os
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, run_cli_in_process
from tensorflow_serving.apis import prediction_service_pb2_grpc
from test_serving import http, png, predict_request, wait_for

from coophash_keras.serving.batcher import Batcher
from coophash_keras.serving.batching_config import (
    BatchingParameters,
    parse_batching_parameters,
    read_batching_parameters,
)
from coophash_keras.serving.errors import ServingError, invalid


# ------------------------------------------------------------------------ the parameters file
def test_the_shipped_file_reads_as_tf_serving_reads_it():
    p = read_batching_parameters(os.path.join(REPO, "serving", "config", "batching.config"))
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches, p.num_batch_threads) == (
        1024,
        0,
        100,
        1,
    )
    assert p.enable_large_batch_splitting and p.max_execution_batch_size == 64 and p.allowed_batch_sizes == ()


def test_unset_fields_take_tf_servings_defaults():
    p = parse_batching_parameters("")
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches) == (1000, 0, 10)
    assert p.num_batch_threads == (os.cpu_count() or 1) and not p.enable_large_batch_splitting
    p = parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 8")
    assert p.allowed_batch_sizes == (2, 8) and [p.padded_size(n) for n in (1, 2, 3, 8)] == [2, 2, 8, 8]


@pytest.mark.parametrize(
    "text, match",
    [
        ("max_batch_sise { value: 8 }", r"f.config: 1:1 .*no field named \"max_batch_sise\""),
        ("max_batch_size: 8", 'Expected "{"'),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive; was 0"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative"),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches must be positive"),
        ("num_batch_threads { value: -2 }", "num_batch_threads must be positive"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        ("max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]", "positive and increasing"),
        ("pad_variable_length_inputs: true", "pad_variable_length_inputs is not supported"),
    ],
)
def test_a_bad_parameters_file_is_one_line_naming_the_problem(text, match):
    with pytest.raises(ValueError, match=match):
        parse_batching_parameters(text, where="f.config")


@pytest.mark.parametrize(
    "flags", [("--enable_batching", "--batching_parameters_file"), ("--enable-batching", "--batching-parameters-file")]
)
def test_coophash_serve_takes_tf_servings_flags_and_a_bad_file_is_one_line(tmp_path, flags):
    bad = tmp_path / "batching.config"
    bad.write_text("max_batch_size { value: 64 }\nbatch_timeout_micro { value: 1 }\n")
    result = run_cli_in_process(["serve", "--model-base", str(tmp_path), flags[0], flags[1], str(bad)])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f'{bad}: 2:1 : Message type "tensorflow.serving.BatchingParameters" has no field named' in result.stderr


# ------------------------------------------------------- the queue, on a stand-in signature
class DoublingSignature:
    """Signature's batching contract (check / check_output_filter / call) in plain numpy:
    y = 2x; a negative x fails the call, as an undecodable image fails the model's."""

    outputs = {"y": None, "x_again": None}

    def __init__(self, gate=None):
        self.batches = []  # the rows of every call, in order
        self.gate = gate  # a threading.Event every call waits for

    def check_output_filter(self, output_filter):
        if any(o not in self.outputs for o in output_filter or ()):
            raise invalid("output tensor alias not found")

    def check(self, inputs):
        x = np.asarray(inputs["x"])
        if x.ndim != 1:
            raise invalid("x must be a vector")
        return {"x": x}

    def call(self, arrays, output_filter=None):
        if self.gate is not None:
            self.gate.wait(60)
        x = arrays["x"]
        self.batches.append(x.tolist())
        if (x < 0).any():
            raise invalid("negative input")
        return {"y": 2 * x, "x_again": x.copy()}


def concurrently(n, fn):
    """fn(i) for i < n on n threads started together -> [result or ServingError message]."""
    out, start = [None] * n, threading.Barrier(n)

    def worker(i):
        start.wait()
        try:
            out[i] = fn(i)
        except ServingError as exc:
            out[i] = exc.message

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    return out


@pytest.fixture
def batcher_factory():
    made = []

    def make(**kw):
        made.append(Batcher(BatchingParameters(**kw)))
        return made[-1]

    yield make
    for b in made:
        b.stop()


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(batcher_factory):
    sig = DoublingSignature()
    batcher = batcher_factory(max_batch_size=32, batch_timeout_micros=200_000, num_batch_threads=1)
    out = concurrently(16, lambda i: batcher.run(sig, {"x": [i, 100 + i]})["y"].tolist())
    assert out == [[2 * i, 200 + 2 * i] for i in range(16)]
    assert len(sig.batches) < 16 and max(len(b) for b in sig.batches) > 2  # merged, not one by one
    assert sorted(sum(sig.batches, [])) == sorted([i for i in range(16)] + [100 + i for i in range(16)])


def test_a_request_the_model_rejects_fails_alone(batcher_factory):
    sig = DoublingSignature()
    batcher = batcher_factory(max_batch_size=32, batch_timeout_micros=200_000, num_batch_threads=1)
    out = concurrently(8, lambda i: batcher.run(sig, {"x": [-1 if i == 3 else i]})["y"].tolist())
    assert out == [[2 * i] if i != 3 else "negative input" for i in range(8)]
    assert any(len(b) > 1 and -1 in b for b in sig.batches)  # it did share a batch, which failed
    with pytest.raises(ServingError, match="x must be a vector"):  # checked before it joins a batch
        batcher.run(sig, {"x": [[1]]})


def test_output_filter_and_padding_to_an_allowed_batch_size(batcher_factory):
    sig = DoublingSignature()
    batcher = batcher_factory(max_batch_size=8, allowed_batch_sizes=(4, 8), num_batch_threads=1)
    out = batcher.run(sig, {"x": [5, 6, 7]}, ["x_again"])
    assert set(out) == {"x_again"} and out["x_again"].tolist() == [5, 6, 7]
    assert sig.batches == [[5, 6, 7, 5]]  # padded to 4 with the last request's first row, as TF-Serving pads


def test_a_request_larger_than_max_batch_size_is_refused_as_tf_serving_refuses_it(batcher_factory):
    batcher = batcher_factory(max_batch_size=4)
    with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4") as err:
        batcher.run(DoublingSignature(), {"x": np.arange(5)})
    assert err.value.code == "INVALID_ARGUMENT"


def test_with_large_batch_splitting_a_request_is_split_over_batches_and_put_back_together(batcher_factory):
    sig = DoublingSignature()
    batcher = batcher_factory(
        max_batch_size=100, enable_large_batch_splitting=True, max_execution_batch_size=4, num_batch_threads=2
    )
    out = batcher.run(sig, {"x": np.arange(10)})
    assert out["y"].tolist() == list(range(0, 20, 2))
    assert sorted(len(b) for b in sig.batches) == [2, 4, 4] and max(len(b) for b in sig.batches) <= 4


@pytest.mark.parametrize("splitting", [False, True])
def test_a_full_queue_answers_unavailable_with_tf_servings_message(batcher_factory, splitting):
    gate = threading.Event()
    sig = DoublingSignature(gate)
    batcher = batcher_factory(
        max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1, enable_large_batch_splitting=splitting
    )
    running = batcher.submit(sig, {"x": [1]})
    wait_for(lambda: batcher._queues and next(iter(batcher._queues.values())).running == 1, "the first batch to run")
    queued = batcher.submit(sig, {"x": [2]})  # fills the one batch the queue may hold
    with pytest.raises(ServingError, match="The batch scheduling queue to which this task was submitted is full") as e:
        batcher.submit(sig, {"x": [3]})
    assert e.value.code == "UNAVAILABLE" and e.value.http_status == 503
    gate.set()
    assert running.result(30)["y"].tolist() == [2] and queued.result(30)["y"].tolist() == [4]


def test_stop_answers_what_is_queued(batcher_factory):
    sig = DoublingSignature()
    batcher = batcher_factory(max_batch_size=64, batch_timeout_micros=60_000_000, num_batch_threads=1)
    futures = [batcher.submit(sig, {"x": [i]}) for i in range(3)]  # would wait a minute for more
    batcher.stop()
    assert [f.result(1)["y"].tolist() for f in futures] == [[0], [2], [4]]


def test_the_batcher_counts_its_batches_rows_and_the_time_they_ran(batcher_factory):
    # what bench_request_cpu.py divides by the load's wall time: is the model kept waiting?
    class SlowSignature(DoublingSignature):
        def call(self, arrays, output_filter=None):
            time.sleep(0.05)
            return super().call(arrays, output_filter)

    batcher = batcher_factory(max_batch_size=8, num_batch_threads=1)
    start = time.perf_counter()
    for i in range(3):  # one after another: three batches
        batcher.run(SlowSignature(), {"x": [i, i]})
    elapsed = time.perf_counter() - start
    assert (batcher.batches_run, batcher.rows_run) == (3, 6)
    assert 3 * 0.05 <= batcher.batch_seconds <= elapsed


# ------------------------------------------------------------- the served model, under load
@pytest.fixture(scope="module")
def batched_server(trained_tiny, tmp_path_factory, digits):
    from coophash_keras.export import export_saved_model
    from coophash_keras.serving.server import ModelServer

    base = str(tmp_path_factory.mktemp("batched_models"))
    export_saved_model(trained_tiny[1], base, "coophash", warmup=False)
    params = BatchingParameters(max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=2)
    srv = ModelServer(base, port=0, grpc_port=0, poll_interval=0.1, batching_parameters=params).start()
    yield srv, base
    srv.stop()


def test_served_signatures_give_the_loaded_signatures_outputs_at_any_batch_size(batched_server, digits):
    """registry.Signature calls the loaded signature through a concrete function traced once at
    load (serving/registry.py _direct): same outputs as the loaded SavedModel's own signature, for
    batch sizes it has not seen."""
    from coophash_keras.serving.registry import Servable

    _, base = batched_server
    version = max(int(v) for v in os.listdir(os.path.join(base, "coophash")))
    servable = Servable("coophash", version, os.path.join(base, "coophash", str(version)))
    loaded = tf.saved_model.load(os.path.join(base, "coophash", str(version)))
    for size in (1, 3, 7):
        images = digits.images[:size]
        ours = servable.signature("serving_default").call({"images": images})
        theirs = loaded.signatures["serving_default"](images=tf.constant(images))
        assert set(ours) == set(theirs)
        for name, value in theirs.items():
            np.testing.assert_array_equal(ours[name], value.numpy())
        encoded = np.array([png(im) for im in images], dtype=object)
        ours = servable.signature("hash_image_bytes").call({"image_bytes": encoded})
        theirs = loaded.signatures["hash_image_bytes"](image_bytes=tf.constant(list(encoded)))
        for name, value in theirs.items():
            np.testing.assert_array_equal(ours[name], value.numpy())
    assert type(servable.signature("serving_default").fn) is not type(loaded.signatures["serving_default"])


def b64_request(image_bytes):
    return {"signature_name": "hash_image_bytes", "instances": [{"b64": base64.b64encode(image_bytes).decode()}]}


def test_sixteen_concurrent_clients_each_get_the_codes_of_a_lone_call(batched_server, digits):
    srv, _ = batched_server
    images = digits.images[:16]
    # what a lone call gives: one request at a time, so each runs in a batch of its own
    alone = [http(srv, "POST", "/v1/models/coophash:predict", b64_request(png(im)))[1] for im in images]
    calls = []
    original = srv.registry.get("coophash").signature("hash_image_bytes").call

    def counting_call(arrays, output_filter=None):
        calls.append(len(arrays["image_bytes"]))
        return original(arrays, output_filter)

    srv.registry.get("coophash").signature("hash_image_bytes").call = counting_call
    try:
        junk = {"signature_name": "hash_image_bytes", "instances": [{"b64": base64.b64encode(b"not a png").decode()}]}
        wrong_shape = {"instances": [[[1, 2]]]}

        channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def client(i):
            if i == 16:
                return http(srv, "POST", "/v1/models/coophash:predict", junk)
            if i == 17:
                return http(srv, "POST", "/v1/models/coophash:predict", wrong_shape)
            if i >= 12:  # gRPC clients join the same queue as the REST ones
                req = predict_request("hash_image_bytes", "image_bytes", [png(images[i])], tf.string)
                codes = tf.make_ndarray(stub.Predict(req, timeout=60).outputs["codes"]).tolist()
                return 200, {"predictions": [{"codes": codes[0], "class_probs": None}]}
            return http(srv, "POST", "/v1/models/coophash:predict", b64_request(png(images[i])))

        out = concurrently(18, client)
        channel.close()
    finally:
        del srv.registry.get("coophash").signature("hash_image_bytes").call
    for i in range(16):
        status, body = out[i]
        assert status == 200, body
        assert body["predictions"][0]["codes"] == alone[i]["predictions"][0]["codes"]
        if i < 12:
            np.testing.assert_allclose(
                body["predictions"][0]["class_probs"], alone[i]["predictions"][0]["class_probs"], atol=1e-5
            )
    assert out[16][0] == 400 and set(out[16][1]) == {"error"}  # the junk image fails alone
    assert out[17][0] == 400 and "must have shape" in out[17][1]["error"]  # refused before joining
    assert max(calls) > 1  # requests did share model calls


def test_a_full_queue_over_http_answers_503_with_tf_servings_message_and_every_request_is_answered(
    batched_server, digits
):
    """A real server whose queue holds one batch of one row: the model call is held on an event,
    so which requests overflow is certain, not a matter of timing."""
    from coophash_keras.serving.server import ModelServer

    _, base = batched_server
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    srv = ModelServer(base, port=0, batching_parameters=params).start()
    gate, entered = threading.Event(), threading.Event()
    sig = srv.registry.get("coophash").signature("hash_image_bytes")
    original = sig.call

    def held_call(arrays, output_filter=None):
        entered.set()
        assert gate.wait(60), "the test never opened the gate"
        return original(arrays, output_filter)

    sig.call = held_call
    path = "/v1/models/coophash:predict"
    bodies = [b64_request(png(im)) for im in digits.images[:8]]
    answers = {}
    try:
        first = threading.Thread(target=lambda: answers.setdefault(0, http(srv, "POST", path, bodies[0])))
        first.start()
        assert entered.wait(60)  # request 0 is in the model call; the queue is empty again
        second = threading.Thread(target=lambda: answers.setdefault(1, http(srv, "POST", path, bodies[1])))
        second.start()
        queue = lambda: next(iter(srv.batcher._queues.values()))  # noqa: E731
        wait_for(lambda: queue().sizes[-1] == 1, "request 1 to fill the one batch the queue may hold")
        # Six more, at once, while the two are held: each finds the queue full.
        overflow = concurrently(6, lambda i: http(srv, "POST", path, bodies[2 + i]))
        gate.set()
        first.join(60)
        second.join(60)
        after = http(srv, "POST", path, bodies[0])  # the queue has room again
    finally:
        gate.set()
        del sig.call
        srv.stop()
    assert [answers[0][0], answers[1][0], after[0]] == [200, 200, 200]
    assert answers[0][1] == after[1] and len(answers[1][1]["predictions"]) == 1
    assert [status for status, _ in overflow] == [503] * 6
    for _, body in overflow:
        assert body == {
            "error": "The batch scheduling queue to which this task was submitted is full; currently "
            "1 batches enqueued and max_enqueued_batches is 1"
        }


def test_waiting_rest_requests_hold_no_worker_thread_so_one_thread_still_fills_a_batch(batched_server, digits):
    """A small :predict request waits for its batch on the event loop, not on a REST worker: with a
    single worker thread, four concurrent requests still meet in one model call. (A worker per
    waiting request would hold the one thread for the whole minute of batch_timeout_micros.)"""
    from coophash_keras.serving.server import ModelServer

    _, base = batched_server
    params = BatchingParameters(max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1)
    srv = ModelServer(base, port=0, rest_api_num_threads=1, batching_parameters=params).start()
    sig = srv.registry.get("coophash").signature("hash_image_bytes")
    original, calls = sig.call, []

    def counting_call(arrays, output_filter=None):
        calls.append(len(arrays["image_bytes"]))
        return original(arrays, output_filter)

    sig.call = counting_call
    try:
        bodies = [b64_request(png(im)) for im in digits.images[:4]]
        out = concurrently(4, lambda i: http(srv, "POST", "/v1/models/coophash:predict", bodies[i]))
    finally:
        del sig.call
        srv.stop()
    assert [status for status, _ in out] == [200] * 4
    assert calls == [4]  # one call, run because the batch was full, long before its timeout


def test_every_request_is_answered_while_a_new_version_is_swapped_in_under_batched_load(
    batched_server, trained_tiny, digits
):
    from coophash_keras.export import export_saved_model

    srv, base = batched_server
    expected = trained_tiny[0].encode(digits.images[:8])
    stop, errors, versions = threading.Event(), [], set()
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def rest_client(i):
        while not stop.is_set():
            status, body = http(srv, "POST", "/v1/models/coophash:predict", b64_request(png(digits.images[i])))
            if status != 200 or body["predictions"][0]["codes"] != expected[i].tolist():
                errors.append((status, body))

    def grpc_client(i):
        while not stop.is_set():
            try:
                resp = stub.Predict(predict_request("serving_default", "images", digits.images[i : i + 1]), timeout=60)
            except grpc.RpcError as exc:
                errors.append(exc.details())
                continue
            versions.add(resp.model_spec.version.value)
            if tf.make_ndarray(resp.outputs["codes"]).tolist() != expected[i : i + 1].tolist():
                errors.append("wrong codes")

    threads = [threading.Thread(target=rest_client, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=grpc_client, args=(i,)) for i in range(4, 8)]
    [t.start() for t in threads]
    try:
        time.sleep(0.5)
        version = export_saved_model(trained_tiny[1], base, "coophash", warmup=False)  # the next version
        wait_for(lambda: srv.registry.get("coophash").version == int(os.path.basename(version)), "the swap")
        wait_for(lambda: int(os.path.basename(version)) in versions, "an answer from the new version")
    finally:
        stop.set()
        [t.join(60) for t in threads]
        channel.close()
    assert not errors, errors[:3]
    assert len(versions) == 2  # answers came from both versions, all correct
