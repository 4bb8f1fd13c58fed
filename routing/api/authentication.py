"""API token authentication with the login lockout of django-axes.

A token that verifies is always accepted. A wrong one counts as a failed login of a pseudo user named after
the presented token's key (knox's first characters, never the secret rest) from the client's address, so
repeating guesses at one token is locked out like guessing one user's password, while other tokens, and
other clients behind the same reverse proxy, are untouched. The token itself is never logged or stored.
"""

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from knox.auth import TokenAuthentication
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header
from rest_framework.throttling import BaseThrottle


def client_address(request):
    """Return the client's address as the API's throttles see it (settings.AXES_CLIENT_IP_CALLABLE): the
    peer, or behind WEATHERVANE_BEHIND_PROXY the address the proxy appended to X-Forwarded-For (NUM_PROXIES)."""
    return BaseThrottle().get_ident(request)


def lockout_name(presented):
    """Return the pseudo user name failures of the presented token (bytes) count against."""
    key = presented[:CONSTANTS.TOKEN_KEY_LENGTH].decode("latin-1")
    return f"(api token {key.encode('unicode_escape').decode('ascii')})"


class TokenLockoutMixin:
    """Put in front of any token authentication class with a `keyword`."""

    def authenticate(self, request):
        words = get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            self._count_failure(request, words[1] if len(words) > 1 else b"")
            raise
        except UnicodeDecodeError:  # knox decodes the token as UTF-8: another byte is just a wrong token
            self._count_failure(request, words[1])
            raise exceptions.AuthenticationFailed("Invalid token.") from None

    def _count_failure(self, request, presented):
        """Book one failure; raise the lockout's 429 once this token key failed too often from this address."""
        credentials = {"username": lockout_name(presented)}
        user_login_failed.send(sender=type(self), credentials=credentials, request=request._request)
        if not AxesProxyHandler.is_allowed(request._request, credentials):
            raise token_locked_out()


def token_locked_out():
    """Return the 429 for a token key locked out from one address."""
    wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
    return exceptions.Throttled(wait=wait, detail=f"Locked out: too many failed token attempts with this token key "
                                                  f"from your address. Try again in {max(1, wait // 60)} minutes, "
                                                  "or ask an administrator to unlock it.")


class LockableTokenAuthentication(TokenLockoutMixin, TokenAuthentication):
    """Hashed, expiring API tokens (django-rest-knox, `Token <token>`); wrong tokens are locked out per token key
    and client address after repeated failures, a valid token never is."""

    keyword = "Token"
