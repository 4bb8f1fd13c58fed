"""Query-string filters that refuse what the schema forbids: a malformed boolean,
date, number or choice is a 400, never silently "no filter"."""

from django import forms
from django.db import models
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field

MAX_ID = 2**63 - 1  # the largest id a 64-bit database column holds


class StrictBooleanField(forms.Field):
    """A query-string boolean: exactly `true` or `false`; anything else is a 400, not "no filter"."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        if value not in ("true", "false"):
            raise forms.ValidationError("Use true or false.", code="invalid")
        return value == "true"


class StrictBooleanFilter(filters.BooleanFilter):
    field_class = StrictBooleanField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", forms.TextInput)  # the field must see the raw text to refuse it
        super().__init__(*args, **kwargs)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class IdFilter(filters.NumberFilter):
    """A foreign key filtered by id: an unknown id matches nothing (not a 400); a malformed one,
    or one beyond what the database can hold, is a 400."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


def _strict_defaults():
    defaults = dict(filters.FilterSet.FILTER_DEFAULTS)
    for model_field, spec in defaults.items():
        if spec["filter_class"] is filters.BooleanFilter:
            defaults[model_field] = {"filter_class": StrictBooleanFilter}
    defaults[models.ForeignKey] = {"filter_class": IdFilter}
    defaults[models.OneToOneField] = {"filter_class": IdFilter}
    return defaults


class StrictFilterSet(filters.FilterSet):
    """A FilterSet whose booleans are strict, whose foreign keys filter by id, and where a present
    but empty value is refused for anything but plain text (an empty date or choice is malformed)."""

    FILTER_DEFAULTS = _strict_defaults()

    def is_valid(self):
        valid = super().is_valid()
        for name, flt in self.filters.items():
            if self.data.get(name) == "" and type(flt) is not filters.CharFilter:
                self.form.add_error(name, "Give a value or leave the parameter out.")
                valid = False
        return valid
