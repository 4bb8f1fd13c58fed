"""API token authentication with the login lockout of django-axes.

A wrong token counts as a failed login (under the pseudo user name
TOKEN_USERNAME, per client address), so guessing tokens is locked out like
guessing passwords; the token itself is never logged or stored.
"""

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from knox.auth import TokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

TOKEN_USERNAME = "(api token)"


class TokenLockoutMixin:
    """Put in front of any token authentication class with a `keyword`."""

    def authenticate(self, request):
        if not self._presents_token(request):
            return None
        credentials = {"username": TOKEN_USERNAME}
        if not AxesProxyHandler.is_allowed(request._request, credentials):
            raise token_locked_out()
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            user_login_failed.send(sender=type(self), credentials=credentials, request=request._request)
            raise

    def _presents_token(self, request):
        words = get_authorization_header(request).split()
        return bool(words) and words[0].lower() == self.keyword.lower().encode()


def token_locked_out():
    """Return the 429 for an address locked out of token authentication."""
    wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
    return exceptions.Throttled(wait=wait, detail=f"Locked out: too many failed token attempts from your address. "
                                                  f"Try again in {max(1, wait // 60)} minutes, "
                                                  "or ask an administrator to unlock it.")


class LockableTokenAuthentication(TokenLockoutMixin, TokenAuthentication):
    """Hashed, expiring API tokens (django-rest-knox, `Token <token>`), locked out after repeated wrong tokens."""

    keyword = "Token"
