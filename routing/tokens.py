"""Personal REST API tokens: issued and revoked here by the dashboard page and
the `api_token` command alike, each with an audit record. The plaintext exists
only in the return value of `issue`; the database keeps knox's digest.

Setting a user's password ends all their tokens, as it ends their other
sessions: a leaked token must not outlive the password change meant to lock
its thief out."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
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


def revoke(token, *, actor, user=None, reason=""):
    """Delete `token` (it stops working at once) and audit it."""
    with transaction.atomic():
        record(action=AuditAction.DELETE, actor=actor, user=user, before=_described(token), object_type="apitoken",
               object_id=token.token_key, object_repr=str(token), reason=reason)
        token.delete()


def revoke_all(user, *, actor, reason):
    """Delete every token of `user`, each audited with `reason`; return how many there were."""
    with transaction.atomic():
        owned = list(ApiToken.objects.filter(user=user).select_related("user"))
        for token in owned:
            revoke(token, actor=actor, reason=reason)
    return len(owned)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="routing.tokens.end_on_password_change")
def _end_tokens_on_password_change(sender, instance, created=False, **kwargs):
    # Django keeps the new raw password in `_password` from set_password() until the save that stores it
    # (its own password_changed hook reads it too); a hash upgraded at log-in leaves it None, so a log-in
    # never ends tokens.
    if not created and getattr(instance, "_password", None) is not None:
        revoke_all(instance, actor=instance.get_username(), reason="the password was changed")


def live_tokens(user):
    """Return `user`'s tokens that have not expired, newest first."""
    return ApiToken.objects.filter(user=user).exclude(expiry__lte=timezone.now())
