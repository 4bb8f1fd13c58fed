"""No two processes may disagree about the key that encrypts the stored secrets.

The database remembers the fingerprint of the encrypting key and a token made
with it (one EncryptionKeyCheck row), recorded on first use. Every process
checks at start that its key set opens that token, and refuses to start
otherwise, naming the fingerprint it expected. `rotate_secrets` moves the
record to the new key. The checks run from: the system check
`weathervane.E001` (every manage.py command: serve, gateway, migrate, check,
runserver, ...), Celery's worker and beat start, and dashboard/asgi.py in the
scaled mode (Daphne).
"""

import logging

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError

from routing import crypto

log = logging.getLogger(__name__)

CHECK_ID = 1  # the single row
PLAINTEXT = "weathervane key check"


class KeysDiverge(ImproperlyConfigured):
    """This process's keys cannot read what the database's key encrypted."""


def verify_key_set():
    """Return the database's key fingerprint, recording this process's primary key on first use.

    Returns None when the database cannot be asked (unreachable, or not migrated
    yet). Raises KeysDiverge when this process's keys cannot open the recorded
    token, or, on first use, the stored provider secrets.
    """
    from routing.models import EncryptionKeyCheck

    try:
        check = EncryptionKeyCheck.objects.filter(pk=CHECK_ID).first() or _record_first()
    # e.g. before the first migrate; the readiness endpoint reports a database that is down
    except DatabaseError as exc:
        log.debug("could not compare the secret-encryption keys with the database's: %s", type(exc).__name__)
        return None
    if not _opens(check.token):
        raise KeysDiverge(_mismatch(check.fingerprint))
    return check.fingerprint


def record_primary():
    """Make this process's primary key the database's key (after `rotate_secrets`); return its fingerprint."""
    from routing.models import EncryptionKeyCheck

    primary = crypto.fingerprints()[0]
    defaults = {"fingerprint": primary, "token": crypto.encrypt(PLAINTEXT)}
    EncryptionKeyCheck.objects.update_or_create(pk=CHECK_ID, defaults=defaults)
    return primary


def _record_first():
    from routing.models import ApiKey, EncryptionKeyCheck

    newest = ApiKey.objects.order_by("-pk").values_list("secret_encrypted", flat=True).first()
    if newest and not _opens(newest):
        raise KeysDiverge(
            f"The keys in {settings.FERNET_KEYS_SOURCE} (fingerprints {', '.join(crypto.fingerprints())}) "
            "cannot decrypt the provider secrets already stored in this database. Start this process with the keys "
            "they were encrypted with."
        )
    defaults = {"fingerprint": crypto.fingerprints()[0], "token": crypto.encrypt(PLAINTEXT)}
    try:
        return EncryptionKeyCheck.objects.get_or_create(pk=CHECK_ID, defaults=defaults)[0]
    except IntegrityError:  # another process recorded its key first
        return EncryptionKeyCheck.objects.get(pk=CHECK_ID)


def _opens(token):
    try:
        crypto.decrypt(token)
    except crypto.SecretUnreadable:
        return False
    return True


def _mismatch(expected):
    return (
        f"The secret-encryption keys of this process ({settings.FERNET_KEYS_SOURCE}, fingerprints "
        f"{', '.join(crypto.fingerprints())}) cannot decrypt this database's secrets, which were encrypted with "
        f"the key of fingerprint {expected}. Give every process the same WEATHERVANE_FERNET_KEYS, with that key in it."
    )
