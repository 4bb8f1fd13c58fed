"""One JSON error shape for the whole REST API: {"error": {...}, "detail": ...}."""

from rest_framework.exceptions import NotAuthenticated
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Return DRF's response with anonymous callers always answered 401, never 403."""
    if isinstance(exc, NotAuthenticated) or getattr(exc, "status_code", None) == 401:
        response = drf_exception_handler(exc, context)
        if response is not None:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Token realm="api"'
        return response
    return drf_exception_handler(exc, context)
