import pytest
from django.db import connection

from routing import crypto
from routing.models import ApiKey, AuditEvent, Provider


@pytest.mark.django_db
def test_a_stored_secret_is_encrypted_in_the_database():
    provider = Provider.objects.create(name="p", base_url="http://127.0.0.1:9/v1")
    key = ApiKey(provider=provider, label="main")
    key.set_secret("sk-plaintext-marker-1234")
    key.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted, secret_hint FROM routing_apikey")
        stored, hint = cursor.fetchone()
    assert "plaintext-marker" not in stored
    assert hint == "sk-…1234"
    assert ApiKey.objects.get().reveal() == "sk-plaintext-marker-1234"


def test_masking_reveals_at_most_the_last_four_characters():
    assert crypto.mask("sk-abcdefghijklmnop") == "sk-…mnop"
    assert crypto.mask("short") == "…"


@pytest.mark.django_db
def test_audit_events_cannot_be_changed_or_deleted():
    event = AuditEvent.objects.create(actor="a", action="create", object_type="route", object_id="1", object_repr="r")
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1
