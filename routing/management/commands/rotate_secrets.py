"""Re-encrypt every stored provider secret (and alert channel target and signing secret) with the newest Fernet key.

Rotation: put a new key first in WEATHERVANE_FERNET_KEYS (keeping the old
ones after it), run this command, then drop the old keys.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from routing import crypto, keycheck
from routing.audit import record
from routing.models import ApiKey, AuditAction

ACTOR = "command:rotate_secrets"


class Command(BaseCommand):
    help = "Re-encrypt every API key secret and alert channel target with the first key in WEATHERVANE_FERNET_KEYS."

    def handle(self, *args, **options):
        with transaction.atomic():
            rotated, unreadable = self.rotate_all()
            lost_channels = self.rotate_channels()
            keycheck.record_primary()
            record(
                action=AuditAction.ROTATE, actor=ACTOR, object_type="apikey", object_id="*",
                object_repr=f"{rotated} API key secrets", after={"rotated": rotated, "unreadable": unreadable},
            )
        self.stdout.write(f"Re-encrypted {rotated} API key secret(s) with the newest key.")
        unreadable += lost_channels
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} key(s) could not be decrypted with any configured key and were left as they were: "
                f"{', '.join(unreadable)}. Add the key they were encrypted with, or set their secrets again."
            )

    def rotate_channels(self):
        """Re-encrypt the alert channels' targets and secrets too; return the names no configured key opens."""
        from dashboard.alerts.models import rotate_channel_secrets

        rotated, unreadable = rotate_channel_secrets()
        if rotated or unreadable:
            record(action=AuditAction.ROTATE, actor=ACTOR, object_type="channel", object_id="*",
                   object_repr=f"{rotated} alert channel secrets", after={"rotated": rotated, "unreadable": unreadable})
        if rotated or unreadable:
            self.stdout.write(f"Re-encrypted {rotated} alert channel target(s) and signing secret(s).")
        return [f"alert channel {name}" for name in unreadable]

    def rotate_all(self):
        """Return (number re-encrypted, names of keys no configured key opens)."""
        rotated, unreadable = 0, []
        for key in ApiKey.objects.select_for_update().select_related("provider").order_by("pk"):
            try:
                token = crypto.rotate(key.secret_encrypted)
            except crypto.SecretUnreadable:
                unreadable.append(str(key))
                continue
            # update(): the plaintext is unchanged, so no config-change notice is needed.
            ApiKey.objects.filter(pk=key.pk).update(secret_encrypted=token)
            rotated += 1
        return rotated, unreadable
