"""Clients for the TF-Serving API (ours or the real tensorflow_model_server): REST and gRPC."""

import base64
import json
import urllib.error
import urllib.request

import numpy as np


class ServingClientError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


class RestClient:
    """`RestClient("http://127.0.0.1:8501", "coophash").hash_images(uint8 array)`."""

    def __init__(self, url, model, version=None, timeout=30.0):
        self.url, self.model, self.version, self.timeout = url.rstrip("/"), model, version, timeout

    def _model_path(self):
        return f"{self.url}/v1/models/{self.model}" + (f"/versions/{self.version}" if self.version else "")

    def _request(self, url, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body).get("error", body.decode())
            except ValueError:
                message = body.decode(errors="replace")
            raise ServingClientError(exc.code, message) from None

    def status(self):
        return self._request(self._model_path())

    def metadata(self):
        return self._request(self._model_path() + "/metadata")

    def predict(self, payload):
        return self._request(self._model_path() + ":predict", payload)

    def hash_images(self, images, signature="serving_default"):
        """uint8 [N, H, W, C] -> {output: ndarray} (columnar request)."""
        out = self.predict({"signature_name": signature, "inputs": {"images": np.asarray(images).tolist()}})
        return {k: np.asarray(v) for k, v in out["outputs"].items()}

    def hash_image_files(self, encoded_images):
        """PNG/JPEG bytes -> {output: ndarray}, via the hash_image_bytes signature (b64 instances)."""
        instances = [{"b64": base64.b64encode(b).decode()} for b in encoded_images]
        out = self.predict({"signature_name": "hash_image_bytes", "instances": instances})
        return {k: np.asarray([row[k] for row in out["predictions"]]) for k in out["predictions"][0]}


class GrpcClient:
    """The official PredictionService / ModelService stubs."""

    def __init__(self, target, model, version=None, timeout=30.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(target)
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.model, self.version, self.timeout = model, version, timeout

    def _spec(self, spec, signature=None):
        spec.name = self.model
        if self.version:
            spec.version.value = self.version
        if signature:
            spec.signature_name = signature

    def predict(self, inputs, signature="serving_default", output_filter=()):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        req = predict_pb2.PredictRequest()
        self._spec(req.model_spec, signature)
        for k, v in inputs.items():
            dtype = tf.string if isinstance(v, (list, tuple)) and v and isinstance(v[0], bytes) else None
            req.inputs[k].CopyFrom(tf.make_tensor_proto(v, dtype=dtype))
        req.output_filter.extend(output_filter)
        resp = self.predictions.Predict(req, timeout=self.timeout)
        return {k: tf.make_ndarray(v) for k, v in resp.outputs.items()}

    def metadata(self):
        from tensorflow_serving.apis import get_model_metadata_pb2

        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(req.model_spec)
        resp = self.predictions.GetModelMetadata(req, timeout=self.timeout)
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sigmap)
        return resp, sigmap

    def status(self):
        from tensorflow_serving.apis import get_model_status_pb2

        req = get_model_status_pb2.GetModelStatusRequest()
        self._spec(req.model_spec)
        return self.models.GetModelStatus(req, timeout=self.timeout)

    def close(self):
        self.channel.close()
