"""No two processes may disagree about the key that encrypts the stored secrets.

The database remembers the fingerprint of the encrypting key and a token made
with it (one EncryptionKeyCheck row), recorded on first use. Every process
checks at start that its key set opens that token, and refuses to start
otherwise, naming the fingerprint it expected. `rotate_secrets` moves the
record to the new key. The checks run from: the system check
`weathervane.E001` (every manage.py command: serve, gateway, migrate, check,
runserver, ...), and `verify_at_start` from Celery's worker and beat start,
dashboard/asgi.py in the scaled mode (Daphne) and the gateway's uvicorn
factory (`manage.py gateway`, or uvicorn run directly).

A database that does not accept connections yet (started alongside) is
waited for WEATHERVANE_DB_WAIT seconds. A server that still cannot reach it
starts anyway (its readiness endpoint says the database is missing) and
checks from a background thread as soon as the database answers.
"""

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, OperationalError, close_old_connections, connection

from routing import crypto

log = logging.getLogger(__name__)

CHECK_ID = 1  # the single row
PLAINTEXT = "weathervane key check"


class KeysDiverge(ImproperlyConfigured):
    """This process's keys cannot read what the database's key encrypted."""


def verify_key_set(wait_s=0.0, sleep=time.sleep, clock=time.monotonic):
    """Return the database's key fingerprint, recording this process's primary key on first use.

    Waits up to `wait_s` seconds for a database that refuses connections.
    Returns None when the database cannot be asked (still unreachable, or not
    migrated yet). Raises KeysDiverge when this process's keys cannot open the
    recorded token, or, on first use, the stored provider secrets.
    """
    from routing.models import EncryptionKeyCheck

    if not database_up(wait_s, sleep, clock):
        return None
    try:
        check = EncryptionKeyCheck.objects.filter(pk=CHECK_ID).first() or _record_first()
    # e.g. before the first migrate; the readiness endpoint reports a database that is down
    except DatabaseError as exc:
        log.debug("could not compare the secret-encryption keys with the database's: %s", type(exc).__name__)
        return None
    if not _opens(check.token):
        raise KeysDiverge(_mismatch(check.fingerprint))
    return check.fingerprint


def database_up(wait_s=0.0, sleep=time.sleep, clock=time.monotonic):
    """Return True once the default database accepts a connection, trying again for up to `wait_s` seconds."""
    deadline = clock() + wait_s
    pause = 0.25
    while True:
        try:
            connection.ensure_connection()
            return True
        except OperationalError as exc:
            if clock() + pause > deadline:
                log.debug("the database is not reachable: %s", type(exc).__name__)
                return False
            sleep(pause)
            pause = min(pause * 2, 2.0)


def verify_at_start():
    """Check the keys before a server process serves (Daphne, a gateway worker, a Celery worker or beat).

    Raises KeysDiverge. When the database is still unreachable after
    WEATHERVANE_DB_WAIT seconds, returns None and checks from a daemon thread
    as soon as it answers; diverging keys then stop the process (SIGTERM, so
    it shuts down cleanly). Returns the fingerprint when checked at once.
    """
    # In a thread of its own: uvicorn calls its app factory on the event loop, where Django refuses queries.
    with ThreadPoolExecutor(1, thread_name_prefix="keycheck") as pool:
        fingerprint, reachable = pool.submit(_verify_in_thread).result()
    if not reachable:
        log.warning("the database is not reachable yet: the secret-encryption keys are checked once it answers")
        threading.Thread(target=_verify_when_up, name="keycheck", daemon=True).start()
    return fingerprint


def _verify_in_thread():
    try:
        fingerprint = verify_key_set(wait_s=settings.DB_WAIT_S)
        return fingerprint, fingerprint is not None or database_up()
    finally:
        connection.close()


def _verify_when_up(pause_s=2.0, stop=lambda: os.kill(os.getpid(), signal.SIGTERM)):
    try:
        while not database_up():
            close_old_connections()
            time.sleep(pause_s)
        verify_key_set()
    except KeysDiverge as exc:
        log.critical("weathervane.E001: %s Stopping.", exc)
        stop()
    finally:
        connection.close()


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
