"""Pagination of list endpoints: `limit` and `offset`, refused with 400 when malformed
or out of range (DRF's own class silently falls back to the defaults)."""

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

MAX_PAGE_SIZE = 1000


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """LimitOffsetPagination that answers 400 for a malformed or out-of-range `limit` or `offset`."""

    max_limit = MAX_PAGE_SIZE

    def _whole_number(self, request, name, minimum, maximum=None):
        value = request.query_params.get(name)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or not minimum <= int(value) <= (maximum or int(value)):
            limits = f"{minimum}-{maximum}" if maximum else f"{minimum} or more"
            raise ValidationError({name: [f"A whole number, {limits}."]})
        return int(value)

    def get_limit(self, request):
        limit = self._whole_number(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request):
        return self._whole_number(request, self.offset_query_param, 0) or 0

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": self.max_limit},
            self.offset_query_param: {"minimum": 0},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters
