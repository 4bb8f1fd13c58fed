"""The API contract: what the served OpenAPI schema promises and the strict
query handling that keeps the API to it (checked by the schemathesis run in
tests/routing/test_schema_fuzz.py).

- Every operation documents the errors it can answer (400, 401, 403, 404,
  409, 413, 415, 429) with their JSON shapes (routing.api.errors).
- Request bodies of serializers that refuse unknown fields say
  `additionalProperties: false`; text never holds NUL characters.
- `limit`, `offset` (routing.api.pagination) and filters (routing.api.filters)
  answer 400 for a malformed value instead of ignoring it.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import serializers

NO_NUL = "^[^\\u0000]*$"  # PostgreSQL cannot store NUL in text, so the API refuses it everywhere

DETAIL_ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "version": {"type": "integer"}},
    "required": ["detail"],
}
FIELD_ERRORS = {
    "type": "object",
    "description": '{"<field>": ["message", ...]} (nested for nested input), or {"detail": "..."}',
    "additionalProperties": True,
}
ERROR_TEXTS = {
    "400": "Invalid input; nothing was changed",
    "401": "Not signed in: send `Authorization: Token <token>`",
    "403": "Signed in without the permission this needs",
    "404": "No such object",
    "409": "Conflict: the route changed meanwhile, the object is still in use, or the action cannot run now",
    "413": "Request body too large",
    "415": "The body is not JSON",
    "429": "Too many requests; retry after the Retry-After header",
}
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _error_response(code):
    schema = FIELD_ERRORS if code == "400" else DETAIL_ERROR
    return {"description": ERROR_TEXTS[code], "content": {"application/json": {"schema": schema}}}


class ContractAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus documented errors and strict request bodies."""

    def error_codes(self):
        """Return the error statuses this operation can answer, besides its success."""
        codes = ["401", "403", "429"]
        if self.method in WRITE_METHODS or self._has_query_or_header_parameters():
            codes.append("400")
        if "{" in self.path:
            codes.append("404")
        if self.method in WRITE_METHODS:
            codes.append("409")
        if self.method in {"POST", "PUT", "PATCH"}:
            codes += ["413", "415"]
        return sorted(codes)

    def _has_query_or_header_parameters(self):
        parameters = self._get_filter_parameters() or self._get_pagination_parameters()
        return bool(parameters or self.get_override_parameters())

    def _get_filter_parameters(self):
        parameters = super()._get_filter_parameters()
        for parameter in parameters:
            _refuse_nul(parameter.get("schema", {}))
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self.error_codes():
            documented = responses.setdefault(code, _error_response(code))
            documented.setdefault("content", _error_response(code)["content"])
        return responses

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and schema.get("type") == "string" and "pattern" in schema:
            schema["pattern"] = decimal_pattern(field)
        return schema

    def _map_basic_serializer(self, serializer, direction):
        from routing.api.serializers import StrictFieldsMixin

        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictFieldsMixin) and schema.get("description") == StrictFieldsMixin.__doc__:
            del schema["description"]  # the mixin's docstring is not the serializer's
        if direction == "request":
            for field_schema in schema.get("properties", {}).values():
                _refuse_nul(field_schema)
            if isinstance(serializer, StrictFieldsMixin):
                schema["additionalProperties"] = False
        return schema


def decimal_pattern(field):
    """Return the pattern of a decimal string `field` accepts: at least one digit, and no sign when it
    must not be negative (drf-spectacular's own pattern also matches "" and "-")."""
    whole = f"[0-9]{{1,{field.max_whole_digits}}}" if field.max_whole_digits else "0"
    places = field.decimal_places or 0
    fraction = f"(?:\\.[0-9]{{0,{places}}})?" if places else ""
    sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
    return f"^{sign}{whole}{fraction}$"


def _refuse_nul(schema):
    """Give a string schema (or each string branch of a oneOf) the no-NUL pattern unless it is already constrained."""
    for branch in schema.get("oneOf", [schema]):
        constrained = branch.keys() & {"format", "pattern", "enum"} or branch.get("maxLength") == 0
        if branch.get("type") == "string" and not constrained:
            branch["pattern"] = NO_NUL


class LockableTokenScheme(OpenApiAuthenticationExtension):
    """Documents the API's token authentication (knox's `Token <token>` header, with lockouts) in the schema."""

    target_class = "routing.api.authentication.LockableTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")


def readable_tags(result, generator, request, public):
    """A drf-spectacular postprocessing hook: tags taken from paths read as words ("probe-targets" → "probe
    targets"), like the ones views name themselves ("gateway keys")."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "tags" in operation:
                operation["tags"] = [tag.replace("-", " ") for tag in operation["tags"]]
    return result
