"""GetModelStatusResponse built the same way for REST and gRPC, and the error code a failed load
reports in it."""

import tensorflow as tf
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_status_pb2

_STATE = get_model_status_pb2.ModelVersionStatus.State
_CODE = error_codes_pb2.Code  # status.proto's error_code


def load_error_code(exc):
    """The tensorflow.error.Code name TF-Serving would report for a failed load: an op error's own
    code; TensorFlow's Python wrappers raise OUT_OF_RANGE as IndexError (a truncated variables
    file), INVALID_ARGUMENT as ValueError; an unparsable saved_model.pb is DATA_LOSS (the C++
    loader's "Can't parse ... as binary proto"), a missing file NOT_FOUND."""
    if isinstance(exc, tf.errors.OpError):
        return _CODE.Name(exc.error_code)
    if isinstance(exc, FileNotFoundError) or "does not exist" in str(exc):
        return "NOT_FOUND"
    if isinstance(exc, OSError) and "parse" in str(exc).lower():
        return "DATA_LOSS"
    for kind, code in (
        (IndexError, "OUT_OF_RANGE"),
        (ValueError, "INVALID_ARGUMENT"),
        (NotImplementedError, "UNIMPLEMENTED"),
    ):
        if isinstance(exc, kind):
            return code
    return "UNKNOWN"


def model_status_response(registry, name, version=None):
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, error_code, error_message in registry.status(name, version):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = _STATE.Value(state)
        entry.status.error_code = _CODE.Value(error_code)
        entry.status.error_message = error_message
    return response
