"""Personal REST API tokens: issued and revoked here by the dashboard page and
the `api_token` command alike, each with an audit record. The plaintext exists
only in the return value of `issue`; the database keeps knox's digest."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from routing.audit import record
from routing.models import ApiToken, AuditAction


class TokenError(ValueError):
    """A token request that cannot be honoured (bad name or lifetime, unknown token)."""


def _described(token):
    return {"name": token.name, "user": token.user.get_username(), "token_key": token.token_key,
            "expiry": token.expiry.isoformat() if token.expiry else None}


def issue(user, name, days=None, *, actor):
    """Create a token for `user` valid for `days` (default settings.API_TOKEN_DAYS); return (token, plaintext).

    Raises TokenError for an empty name or a lifetime outside 1..settings.API_TOKEN_MAX_DAYS.
    """
    name = (name or "").strip()
    days = settings.API_TOKEN_DAYS if days is None else days
    if not name or len(name) > 100:
        raise TokenError("Give the token a name of 1 to 100 characters.")
    if not 1 <= days <= settings.API_TOKEN_MAX_DAYS:
        raise TokenError(f"A token lives 1 to {settings.API_TOKEN_MAX_DAYS} days.")
    with transaction.atomic():
        token, plaintext = ApiToken.objects.create(user, expiry=timedelta(days=days), name=name)
        record(action=AuditAction.CREATE, actor=actor, user=user, after=_described(token), object_type="apitoken",
               object_id=token.token_key, object_repr=str(token))
    return token, plaintext


def revoke(token, *, actor, user=None):
    """Delete `token` (it stops working at once) and audit it."""
    with transaction.atomic():
        record(action=AuditAction.DELETE, actor=actor, user=user, before=_described(token), object_type="apitoken",
               object_id=token.token_key, object_repr=str(token))
        token.delete()


def live_tokens(user):
    """Return `user`'s tokens that have not expired, newest first."""
    return ApiToken.objects.filter(user=user).exclude(expiry__lte=timezone.now())
