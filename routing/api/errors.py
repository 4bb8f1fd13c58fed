"""Errors of the REST API, all answered as JSON.

Shapes: validation problems are {"<field>": ["message", ...], ...} (DRF's
own shape; weight problems use "weights" and "weights.<deployment>"), every
other error is {"detail": "..."}, and a stale route version (409) adds
{"version": <current>}.
"""

from django.core.exceptions import RequestDataTooBig
from django.db.models import ProtectedError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import status
from rest_framework.exceptions import APIException, NotAuthenticated
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from routing.deletion import InUse, InUseByRollout
from routing.weights import RouteLocked, StaleVersion, WeightsInvalid


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"

    def __init__(self, limit=None):
        limit_text = f" (limit: {limit} bytes)" if limit else ""
        super().__init__(f"Request body too large{limit_text}.")


def exception_handler(exc, context):
    """Return the JSON response for `exc`, or None to let Django answer 500."""
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    response = _domain_error(exc)
    if response is not None:
        set_rollback()
        return response
    response = drf_exception_handler(exc, context)
    if response is not None and (isinstance(exc, NotAuthenticated) or response.status_code == 401):
        # Anonymous callers always get 401 with a challenge, never 403.
        response.status_code = 401
        response["WWW-Authenticate"] = 'Token realm="api"'
    return response


def _domain_error(exc):
    if isinstance(exc, WeightsInvalid):
        return Response(exc.errors, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, StaleVersion):
        return Response(
            {"detail": f"The route changed meanwhile (now version {exc.current}); "
                       "reload it and apply your change again.",
             "version": exc.current},
            status=status.HTTP_409_CONFLICT, headers={"ETag": f'"{exc.current}"'},
        )
    if isinstance(exc, InUseByRollout):
        return Response({"detail": str(exc), "rollout": exc.rollout.pk}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, InUse):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, RouteLocked):
        return Response({"detail": str(exc), "rollout": exc.rollout.pk}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ProtectedError):
        used_by = sorted({str(obj) for obj in exc.protected_objects})[:10]
        return Response(
            {"detail": f"Still in use by: {', '.join(used_by)}. Remove those first."}, status=status.HTTP_409_CONFLICT,
        )
    return None


@csrf_exempt  # a JSON 404 for any method, like the API's own (which are exempt and check CSRF per session)
def not_found(request, *args, **kwargs):
    """Answer an /api/ URL that matches no endpoint with the API's JSON 404 (not Django's HTML page)."""
    return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
