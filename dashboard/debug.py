"""What a technical 500 page (DEBUG=true) may show of the settings.

Django hides settings whose names look secret (KEY, TOKEN, PASS...) but not
the password inside a URL: DATABASE_URL, REDIS_URL, CELERY_BROKER_URL and
the cache and channel-layer locations built from them.
"""

import re

from django.views.debug import SafeExceptionReporterFilter

URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<at>@)", re.IGNORECASE)


def mask_url_passwords(text):
    """Return `text` with the password of every URL in it replaced by the substitute."""
    return URL_PASSWORD.sub(rf"\g<head>{SafeExceptionReporterFilter.cleansed_substitute}\g<at>", text)


class CredentialFilter(SafeExceptionReporterFilter):
    """Django's filter, plus masking of credentials inside URL-valued settings (nested ones too)."""

    def cleanse_setting(self, key, value):
        if type(value) is str:  # not lazy objects that only pretend to be strings
            value = mask_url_passwords(value)
        return super().cleanse_setting(key, value)
