"""gRPC PredictionService (Predict, GetModelMetadata) and ModelService (GetModelStatus) on the
official tensorflow-serving-api protos."""

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from coophash_keras.serving.batcher import run_alone
from coophash_keras.serving.errors import ListenError, ServingError, invalid
from coophash_keras.serving.status import model_status_response


def _spec(model_spec):
    if model_spec.version_label:
        raise invalid("Unrecognized servable version label: " + model_spec.version_label)
    if not model_spec.name:
        raise invalid("Missing ModelSpec")
    return model_spec.name, (model_spec.version.value if model_spec.HasField("version") else None)


def _abort(context, exc):
    context.abort(exc.grpc_code, exc.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry, run=run_alone):
        """`run`: batcher.run_alone, or a Batcher's run (the same Batcher as REST's: one queue)."""
        self.registry = registry
        self.run = run

    def Predict(self, request, context):
        try:
            name, version = _spec(request.model_spec)
            servable = self.registry.get(name, version)
            sig_name = request.model_spec.signature_name or "serving_default"
            if sig_name not in servable.signatures:
                raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{sig_name}" not found.')
            try:
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            except Exception as exc:
                raise invalid(f"could not read input tensors: {exc}") from None
            outputs = self.run(servable.signature(sig_name), inputs, list(request.output_filter) or None)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig_name
            for k, v in outputs.items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return response
        except ServingError as exc:
            _abort(context, exc)

    def GetModelMetadata(self, request, context):
        try:
            name, version = _spec(request.model_spec)
            servable = self.registry.get(name, version)
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise invalid(f"Metadata field {fields} is not supported; only 'signature_def' is")
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_def_map())
            return response
        except ServingError as exc:
            _abort(context, exc)

    def _unimplemented(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "this model exports predict signatures only")

    Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry):
        self.registry = registry

    def GetModelStatus(self, request, context):
        try:
            name, version = _spec(request.model_spec)
            return model_status_response(self.registry, name, version)
        except ServingError as exc:
            _abort(context, exc)

    def HandleReloadConfigRequest(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "config reload is not supported; new versions are polled")


def make_grpc_server(
    registry, host="127.0.0.1", port=8500, max_workers=16, max_message_bytes=32 * 1024 * 1024, batcher=None
):
    """`batcher`: shared with REST; each worker waits for its rows, so a batch can only be as large
    as the callers waiting: with a batcher, `max_workers` is at least 2 x the largest merged batch (as
    TF-Serving advises for its request threads), up to 128."""
    run = run_alone
    if batcher is not None:
        run = batcher.run
        max_workers = max(max_workers, min(2 * batcher.params.batch_size_limit, 128))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would bind and
            # silently share its traffic instead of failing.
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry, run), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # taken since ModelServer checked it (that check gives the clearer message)
        bound = 0
    if bound == 0:
        raise ListenError(f"could not listen on {host}:{port} for gRPC")
    return server, bound
