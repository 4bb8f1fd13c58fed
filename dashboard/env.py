"""Tiny typed readers for environment variables.

Each returns the default when the variable is unset or empty, and raises
ImproperlyConfigured naming the variable when its value is malformed, so a
typo fails at start instead of at the first request.
"""

import os
import re
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def _raw(name):
    value = os.environ.get(name, "").strip()
    return value or None


def env_str(name, default=""):
    value = _raw(name)
    return default if value is None else value


def env_bool(name, default=False):
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_int(name, default, minimum=None, maximum=None):
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.") from None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, not {number}.")
    return number


def env_float(name, default, minimum=None, maximum=None):
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {number}.")
    return number


def env_list(name, default=()):
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_url(name, schemes, default=""):
    """Return the URL in `name`, checked to use one of `schemes` and to name a host."""
    value = _raw(name)
    if value is None:
        return default
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.path):
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ImproperlyConfigured(f"{name} must be a URL starting with {allowed}, not a value like {parts.scheme or '?'}://…")
    return value


RATE = re.compile(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_rate(name, default):
    """Return a request rate like "120/min" (DRF's throttle format)."""
    value = _raw(name)
    if value is None:
        return default
    if not RATE.fullmatch(value):
        raise ImproperlyConfigured(f"{name} must be a rate like 120/min (per s, min, hour or day), not {value!r}.")
    return value
