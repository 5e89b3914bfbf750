"""TF-Serving status codes and their HTTP mapping (tensorflow_serving/model_servers/http_server.cc)."""

import grpc

HTTP_STATUS = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNKNOWN": 500,
    "INTERNAL": 500,
    "DATA_LOSS": 500,
}


class ServingError(Exception):
    """An error with a TF-Serving status code; REST answers {"error": message} with its HTTP code."""

    def __init__(self, code, message, http_status=None):
        super().__init__(message)
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code}")
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self):
        return self._http_status or HTTP_STATUS[self.code]

    @property
    def grpc_code(self):
        return getattr(grpc.StatusCode, self.code)


def invalid(message):
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message):
    return ServingError("NOT_FOUND", message)


class ListenError(OSError):
    """A port we cannot listen on (already in use, not ours to bind): one line that names it."""
