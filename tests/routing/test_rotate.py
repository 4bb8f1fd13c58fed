"""manage.py rotate_secrets: re-encrypt provider secrets with the newest key."""

import json
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.test import override_settings

from routing import crypto
from routing.models import ApiKey, AuditEvent, Provider

pytestmark = pytest.mark.django_db

OLD, NEW, LOST = (Fernet.generate_key().decode() for _ in range(3))


def make_key(label, secret, fernet_key):
    with override_settings(FERNET_KEYS=[fernet_key]):
        provider, _ = Provider.objects.get_or_create(name="sim", base_url="http://127.0.0.1:9/v1")
        key = ApiKey(provider=provider, label=label)
        key.set_secret(secret)
        key.save()
    return key


def rotate():
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    return out.getvalue()


def test_after_rotation_the_new_key_alone_opens_every_secret():
    make_key("one", "sk-first-secret-0001", OLD)
    make_key("two", "sk-second-secret-0002", OLD)

    with override_settings(FERNET_KEYS=[NEW, OLD]):
        output = rotate()

    assert "Re-encrypted 2" in output
    with override_settings(FERNET_KEYS=[NEW]):
        assert sorted(k.reveal() for k in ApiKey.objects.all()) == ["sk-first-secret-0001", "sk-second-secret-0002"]
    with override_settings(FERNET_KEYS=[OLD]), pytest.raises(crypto.SecretUnreadable):
        ApiKey.objects.first().reveal()


def test_rotation_is_audited_without_secrets():
    make_key("one", "sk-first-secret-0001", OLD)
    with override_settings(FERNET_KEYS=[NEW, OLD]):
        rotate()
    event = AuditEvent.objects.get(action="rotate")
    assert event.actor == "command:rotate_secrets" and event.after["rotated"] == 1
    stored = json.dumps([event.before, event.after, event.object_repr, event.reason])
    assert "first-secret" not in stored and ApiKey.objects.get().secret_encrypted not in stored


def test_a_secret_no_key_opens_is_reported_and_left_alone_while_others_rotate():
    make_key("good", "sk-good-secret-0001", OLD)
    lost = make_key("lost", "sk-lost-secret-0002", LOST)

    with override_settings(FERNET_KEYS=[NEW, OLD]), pytest.raises(CommandError, match="sim/lost"):
        rotate()

    assert ApiKey.objects.get(label="lost").secret_encrypted == lost.secret_encrypted
    with override_settings(FERNET_KEYS=[NEW]):
        assert ApiKey.objects.get(label="good").reveal() == "sk-good-secret-0001"
    assert AuditEvent.objects.get(action="rotate").after == {"rotated": 1, "unreadable": ["sim/lost"]}


def test_alert_channel_targets_and_signing_secrets_rotate_too():
    from dashboard.alerts.models import Channel

    make_key("one", "sk-first-secret-0001", OLD)
    with override_settings(FERNET_KEYS=[OLD]):
        hook = Channel(name="hook", kind="webhook")
        hook.set_target("https://hooks.example.com/wv/0001")
        hook.set_secret("whsec-0123456789abcdef")
        hook.save()
        mail = Channel(name="mail", kind="email")
        mail.set_target("ops@example.com")
        mail.save()

    with override_settings(FERNET_KEYS=[NEW, OLD]):
        output = rotate()

    assert "Re-encrypted 2 alert channel" in output
    with override_settings(FERNET_KEYS=[NEW]):
        hook, mail = Channel.objects.get(name="hook"), Channel.objects.get(name="mail")
        assert (hook.reveal(), hook.reveal_secret()) == ("https://hooks.example.com/wv/0001", "whsec-0123456789abcdef")
        assert (mail.reveal(), mail.reveal_secret()) == ("ops@example.com", "")
    event = AuditEvent.objects.get(action="rotate", object_type="channel")
    assert event.after == {"rotated": 2, "unreadable": []} and "hooks.example.com" not in json.dumps(event.after)
