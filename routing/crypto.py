"""Encryption of provider secrets at rest (Fernet / MultiFernet).

The keys come from settings.FERNET_KEYS (WEATHERVANE_FERNET_KEYS, or a file
generated in the data directory in the embedded mode): the first key encrypts,
every key decrypts, so keys can be rotated with `manage.py rotate_secrets`.
They are never derived from SECRET_KEY. routing/keycheck.py makes sure every
process uses the key the database's secrets were encrypted with.
"""

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SecretUnreadable(Exception):
    """The stored secret cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys):
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "WEATHERVANE_FERNET_KEYS must be comma-separated Fernet keys "
            "(make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')."
        ) from None


def fernet():
    return _fernet(tuple(settings.FERNET_KEYS))


def encrypt(plaintext):
    """Return the Fernet token (text) for `plaintext`."""
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token):
    """Return the plaintext of `token`; raise SecretUnreadable if no key opens it."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("stored secret cannot be decrypted with the configured keys") from None


def rotate(token):
    """Return `token` re-encrypted with the first (newest) key."""
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("stored secret cannot be decrypted with the configured keys") from None


def fingerprint(key):
    """Return a short one-way digest of one Fernet key (safe to show: it reveals nothing of the key)."""
    return hashlib.sha256(b"weathervane-fernet-key:" + key.encode()).hexdigest()[:16]


def fingerprints():
    """Return the fingerprints of the configured keys, the encrypting one first."""
    return [fingerprint(key) for key in settings.FERNET_KEYS]


def mask(secret):
    """Return a display form that reveals at most the last four characters: `sk-…a1b2`."""
    if not secret:
        return ""
    head = secret[:3] if secret[:3] in ("sk-", "wv-") else ""
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"{head}…{tail}"
