"""GetModelStatusResponse built the same way for REST and gRPC."""

from tensorflow_serving.apis import get_model_status_pb2

_STATE = get_model_status_pb2.ModelVersionStatus.State


def model_status_response(registry, name, version=None):
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state in registry.status(name, version):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = _STATE.Value(state)
        entry.status.error_code = 0
        entry.status.error_message = ""
    return response
