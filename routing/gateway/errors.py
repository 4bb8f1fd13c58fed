"""OpenAI-shaped errors the gateway itself answers with.

Every refusal is a `GatewayError` carrying the HTTP status and OpenAI's
`{"error": {"message", "type", "param", "code"}}` body, so clients and SDKs
handle the gateway's errors exactly like the provider's.
"""

import math

import orjson


def error_payload(message, type_, code, param=None):
    """Return OpenAI's error shape as a dict."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(message, type_, code, param=None):
    """Return OpenAI's error shape as JSON bytes."""
    return orjson.dumps(error_payload(message, type_, code, param))


def sse_error_event(message, type_="server_error", code="stream_interrupted"):
    """Return the SSE event that ends a stream which broke after it started (no [DONE] follows)."""
    return b"data: " + error_body(message, type_, code) + b"\n\n"


class GatewayError(Exception):
    """A request the gateway answers itself; `headers` are extra (name, value) byte pairs."""

    def __init__(self, status, message, type_, code, param=None, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = tuple(headers)

    def body(self):
        return error_body(self.message, self.type, self.code, self.param)


def unauthorized(missing):
    if missing:
        message = "Missing gateway key: send it as 'Authorization: Bearer <key>'."
    else:
        message = "Incorrect gateway key provided."
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key")


def metrics_unauthorized():
    message = "Send the metrics token as 'Authorization: Bearer <WEATHERVANE_METRICS_TOKEN>', or sign in as staff."
    return GatewayError(401, message, "invalid_request_error", "invalid_api_key",
                        headers=[(b"www-authenticate", b'Bearer realm="weathervane-metrics"')])


def route_not_allowed(model):
    return GatewayError(403, f"This gateway key may not use the model '{model}'.", "permission_error",
                        "model_not_allowed", "model")


def unknown_model(model, available):
    names = ", ".join(available) or "none"
    message = f"The model '{model}' does not exist. Available models: {names}."
    return GatewayError(404, message, "invalid_request_error", "model_not_found", "model")


def bad_request(message, param=None, code="invalid_request"):
    return GatewayError(400, message, "invalid_request_error", code, param)


def too_large(limit):
    # Closing the connection stops the server reading (and discarding) the rest of a body it will never use.
    return GatewayError(413, f"The request body is larger than {limit} bytes.", "invalid_request_error",
                        "request_too_large",
                        headers=[(b"connection", b"close")])


def not_found(path):
    return GatewayError(404, f"Unknown path {path}.", "invalid_request_error", "unknown_url")


def method_not_allowed(allowed):
    return GatewayError(405, f"Use {allowed}.", "invalid_request_error", "method_not_allowed",
                        headers=[(b"allow", allowed.encode())])


def retry_after_headers(seconds):
    """Return Retry-After (whole seconds, at least 1) and the precise retry-after-ms."""
    seconds = max(seconds, 0.001)
    return ((b"retry-after", str(max(1, math.ceil(seconds))).encode()),
            (b"retry-after-ms", str(math.ceil(seconds * 1000)).encode()))


def rate_limited(message, retry_after_s, type_="requests"):
    return GatewayError(429, message, type_, "rate_limit_exceeded", headers=retry_after_headers(retry_after_s))
