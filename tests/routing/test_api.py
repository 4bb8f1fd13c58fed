"""The REST API under /api/v1/: CRUD of the registry, weights, audit trail, and
who may do what. Runs on SQLite and (in the scaled pass) on PostgreSQL."""

import json
from datetime import timedelta

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from routing.models import (
    ApiKey,
    AuditEvent,
    Deployment,
    DeploymentCircuit,
    Event,
    GatewayKey,
    KeyState,
    Provider,
    Route,
    RouteTarget,
    hash_gateway_key,
)
from tests.factories import canary_world

pytestmark = pytest.mark.django_db

API = "/api/v1"


def post(client, url, data, **extra):
    return client.post(f"{API}{url}", data, format="json", **extra)


def put(client, url, data, **extra):
    return client.put(f"{API}{url}", data, format="json", **extra)


def patch(client, url, data, **extra):
    return client.patch(f"{API}{url}", data, format="json", **extra)


def everything():
    """A fingerprint of all configuration, to prove a rejected request changed nothing."""
    return {
        "providers": list(Provider.objects.values_list("name", "base_url", "enabled", "updated_at")),
        "keys": list(ApiKey.objects.values_list("label", "secret_encrypted", "state", "updated_at")),
        "deployments": list(Deployment.objects.values_list("name", "enabled", "updated_at")),
        "routes": list(Route.objects.values_list("name", "version", "updated_at")),
        "targets": list(RouteTarget.objects.values_list("route__name", "deployment__name", "weight")),
        "gateway_keys": list(GatewayKey.objects.values_list("name", "key_hash")),
        "audit": AuditEvent.objects.count(),
        "events": Event.objects.count(),
    }


@pytest.fixture
def registry():
    """A provider with one key, two deployments and a route split 90/10."""
    return canary_world(secret="sk-existing-secret-0001", key_label="main").route


# --- The user story ------------------------------------------------------------


def test_an_api_token_alone_sets_up_a_canary_and_moves_its_split(admin_api):
    assert post(admin_api, "/providers/", {"name": "acme", "base_url": "http://127.0.0.1:9/v1"}).status_code == 201
    for label in ("primary", "backup"):
        response = post(admin_api, "/keys/", {"provider": "acme", "label": label, "secret": f"sk-{label}-0123456789"})
        assert response.status_code == 201, response.json()
    for name, model in (("acme-stable", "steady"), ("acme-canary", "fast")):
        response = post(admin_api, "/deployments/", {"name": name, "provider": "acme", "upstream_model": model})
        assert response.status_code == 201, response.json()
    targets = [{"deployment": "acme-stable", "weight": 90}, {"deployment": "acme-canary", "weight": 10}]
    created = post(admin_api, "/routes/", {"name": "chat", "targets": targets})
    assert created.status_code == 201, created.json()
    etag = admin_api.get(f"{API}/routes/chat").headers["ETag"]

    moved = put(admin_api, "/routes/chat/weights", {"weights": {"acme-stable": 50, "acme-canary": 50},
                                                    "reason": "canary looks healthy"}, HTTP_IF_MATCH=etag)

    assert moved.status_code == 200, moved.json()
    assert {t["deployment"]: t["weight"] for t in moved.json()["targets"]} == {"acme-stable": 50, "acme-canary": 50}
    assert moved.headers["ETag"] == f'"{moved.json()["version"]}"' != etag
    trail = admin_api.get(f"{API}/audit/", {"object_type": "route", "action": "weights"}).json()["results"]
    assert len(trail) == 1
    assert trail[0]["before"]["weights"] == {"acme-stable": 90, "acme-canary": 10}
    assert trail[0]["after"]["weights"] == {"acme-stable": 50, "acme-canary": 50}
    assert (trail[0]["actor"], trail[0]["reason"]) == ("alice", "canary looks healthy")
    assert admin_api.get(f"{API}/audit/", {"object_type": "apikey"}).json()["count"] == 2

    stale = put(admin_api, "/routes/chat/weights", {"weights": {"acme-stable": 0, "acme-canary": 100},
                                                    "reason": "go"}, HTTP_IF_MATCH=etag)
    assert stale.status_code == 409
    assert stale.json()["version"] == moved.json()["version"]
    assert Route.objects.get(name="chat").weights() == {"acme-canary": 50, "acme-stable": 50}


# --- Weights ------------------------------------------------------------------------------


BAD_WEIGHTS = [
    ({"stable": 90, "canary": 9}, "weights", "not 99"),
    ({"stable": 110, "canary": -10}, "weights.canary", "from 0 to 100"),
    ({"stable": 101, "canary": 0}, "weights.stable", "from 0 to 100"),
    ({"stable": 90.0, "canary": 10}, "weights.stable", "whole number"),
    ({"stable": "90", "canary": 10}, "weights.stable", "whole number"),
    ({"stable": True, "canary": 99}, "weights.stable", "whole number"),
    ({"stable": 90, "canary": 10, "nonexistent": 0}, "weights.nonexistent", "no deployment named"),
    ({"stable": 100}, "weights", "missing: canary"),
    ({"stable": 90, "outsider-dep": 10}, "weights.outsider-dep", "not a target"),
    ([90, 10], "weights", "dictionary"),
]


@pytest.mark.parametrize(("weights", "field", "message"), BAD_WEIGHTS)
def test_bad_weights_are_rejected_naming_the_problem_and_change_nothing(admin_api, registry, weights, field, message):
    Deployment.objects.create(name="outsider-dep", provider=registry.targets.first().deployment.provider,
                              upstream_model="x")
    before = everything()

    response = put(admin_api, "/routes/chat/weights", {"weights": weights, "reason": "test"})

    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert everything() == before


def test_weight_above_zero_on_a_disabled_deployment_is_rejected(admin_api, registry):
    Deployment.objects.filter(name="canary").update(enabled=False)
    before = everything()

    response = put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "x"})

    assert response.status_code == 400
    assert "disabled" in response.json()["weights.canary"][0]
    assert everything() == before
    accepted = put(admin_api, "/routes/chat/weights", {"weights": {"stable": 100, "canary": 0}, "reason": "x"})
    assert accepted.status_code == 200


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_a_weights_change_without_a_reason_is_rejected(admin_api, registry, reason):
    body = {"weights": {"stable": 50, "canary": 50}}
    if reason is not None:
        body["reason"] = reason
    before = everything()

    response = admin_api.patch(f"{API}/routes/chat/weights", body, format="json")

    assert response.status_code == 400
    assert "reason" in response.json()
    assert everything() == before


def test_weights_accept_the_version_in_the_body_and_refuse_a_stale_one(admin_api, registry):
    body = {"weights": {"stable": 50, "canary": 50}, "reason": "x", "version": registry.version + 5}
    before = everything()

    stale = put(admin_api, "/routes/chat/weights", body)

    assert stale.status_code == 409 and stale.json()["version"] == registry.version
    assert stale.headers["ETag"] == f'"{registry.version}"'
    assert everything() == before
    body["version"] = registry.version
    assert put(admin_api, "/routes/chat/weights", body).json()["version"] == registry.version + 1


def test_a_malformed_if_match_is_a_clear_400(admin_api, registry):
    response = put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "x"},
                   HTTP_IF_MATCH="yesterday")
    assert response.status_code == 400 and "If-Match" in response.json()


def test_unknown_fields_in_a_weights_request_are_rejected(admin_api, registry):
    response = put(admin_api, "/routes/chat/weights",
                   {"weights": {"stable": 50, "canary": 50}, "reason": "x", "force": True})
    assert response.status_code == 400 and response.json() == {"force": ["Unknown field."]}


def test_revert_restores_the_split_before_the_last_change_and_history_lists_changes(admin_api, registry):
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "ramp up"})

    reverted = post(admin_api, "/routes/chat/weights/revert", {"reason": "errors went up"})

    assert reverted.status_code == 200, reverted.json()
    assert Route.objects.get(name="chat").weights() == {"canary": 10, "stable": 90}
    history = admin_api.get(f"{API}/routes/chat/weights/history").json()
    assert [h["reason"] for h in history["results"]] == ["errors went up", "ramp up"]
    assert history["results"][0]["after"]["weights"] == {"canary": 10, "stable": 90}


def test_revert_without_an_earlier_change_or_reason_is_rejected(admin_api, registry):
    before = everything()
    assert "weights" in post(admin_api, "/routes/chat/weights/revert", {"reason": "oops"}).json()
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "ramp"})
    before = everything()
    response = post(admin_api, "/routes/chat/weights/revert", {})
    assert response.status_code == 400 and "reason" in response.json()
    assert everything() == before


def test_the_browser_can_change_weights_with_its_session_and_csrf_token(admin_user, registry):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin_user)
    browser.get("/login/")  # sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    body = json.dumps({"weights": {"stable": 70, "canary": 30}, "reason": "slider"})

    forged = browser.put(f"{API}/routes/chat/weights", body, content_type="application/json")
    sent = browser.put(f"{API}/routes/chat/weights", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)

    assert forged.status_code == 403
    assert sent.status_code == 200
    assert Route.objects.get(name="chat").weights() == {"canary": 30, "stable": 70}


def test_only_staff_change_weights(anon_api, outsider_api, viewer_api, registry):
    body = {"weights": {"stable": 50, "canary": 50}, "reason": "x"}
    assert put(anon_api, "/routes/chat/weights", body).status_code == 401
    assert put(outsider_api, "/routes/chat/weights", body).status_code == 403
    assert put(viewer_api, "/routes/chat/weights", body).status_code == 403
    assert viewer_api.get(f"{API}/routes/chat/weights/history").status_code == 200
    assert Route.objects.get(name="chat").weights() == {"canary": 10, "stable": 90}


# --- Routes -------------------------------------------------------------------------------


def test_a_route_read_carries_its_version_as_etag(viewer_api, registry):
    response = viewer_api.get(f"{API}/routes/chat")
    assert response.headers["ETag"] == f'"{registry.version}"'
    assert response.json()["targets"] == [{"deployment": "canary", "weight": 10},
                                          {"deployment": "stable", "weight": 90}]


def test_a_route_update_honours_if_match_and_bumps_the_version(admin_api, registry):
    before = everything()
    stale = patch(admin_api, "/routes/chat", {"description": "x"}, HTTP_IF_MATCH='"999"')
    assert stale.status_code == 409 and everything() == before

    updated = patch(admin_api, "/routes/chat", {"description": "chat traffic"}, HTTP_IF_MATCH=f'"{registry.version}"')

    assert updated.status_code == 200
    assert updated.json()["version"] == registry.version + 1
    assert updated.headers["ETag"] == f'"{registry.version + 1}"'
    assert AuditEvent.objects.get(action="update").after["description"] == "chat traffic"


def test_a_route_continues_broken_streams_where_verified_by_default_and_its_choice_is_audited(
        admin_api, viewer_api, registry):
    assert viewer_api.get(f"{API}/routes/chat").json()["continue_streams"] == "auto"

    updated = patch(admin_api, "/routes/chat", {"continue_streams": "off"})

    assert updated.status_code == 200 and updated.json()["continue_streams"] == "off"
    event = AuditEvent.objects.get(action="update")
    assert event.before["continue_streams"] == "auto" and event.after["continue_streams"] == "off"


@pytest.mark.parametrize(("sent", "stored"), [(True, "on"), (False, "off"), ("on", "on")])
def test_the_earlier_boolean_continue_streams_still_works(admin_api, registry, sent, stored):
    updated = patch(admin_api, "/routes/chat", {"continue_streams": sent})
    assert updated.status_code == 200 and updated.json()["continue_streams"] == stored


@pytest.mark.parametrize("value", ["sometimes", "", 1, None, ["on"]])
def test_a_continue_streams_that_is_not_a_choice_is_refused_naming_the_field(admin_api, registry, value):
    before = everything()
    response = patch(admin_api, "/routes/chat", {"continue_streams": value})
    assert response.status_code == 400 and "continue_streams" in response.json()
    assert everything() == before


def test_a_deployment_shows_its_prefill_support_read_only(admin_api, viewer_api, registry):
    from django.db.models import F

    assert viewer_api.get(f"{API}/deployments/stable").json()["prefill_support"] == "unknown"
    Deployment.objects.filter(name="stable").update(prefill_support="verified", prefill_model=F("upstream_model"),
                                                    prefill_detail="continued the prefill: 'tok4 tok5'")
    shown = viewer_api.get(f"{API}/deployments/stable").json()
    assert shown["prefill_support"] == "verified" and "tok4" in shown["prefill_detail"]

    Deployment.objects.filter(name="stable").update(prefill_checked_at=timezone.now())
    assert viewer_api.get(f"{API}/deployments/stable").json()["prefill_checked_at"] is not None

    refused = patch(admin_api, "/deployments/stable", {"prefill_support": "refused"})
    assert refused.status_code == 200  # read-only fields are ignored, as created_at is
    assert Deployment.objects.get(name="stable").prefill_support == "verified"  # only the probe writes it

    moved = patch(admin_api, "/deployments/stable", {"upstream_model": "another-model"}).json()
    assert moved["prefill_support"] == "unknown" and moved["prefill_checked_at"] is None  # a verdict about the old


def test_replacing_a_routes_targets_is_validated_and_audited_as_a_weights_change(admin_api, registry):
    bad = patch(admin_api, "/routes/chat", {"targets": [{"deployment": "stable", "weight": 60}]})
    assert bad.status_code == 400 and "100" in str(bad.json()["targets"])

    good = patch(admin_api, "/routes/chat", {"targets": [{"deployment": "stable", "weight": 100}]},
                 HTTP_X_AUDIT_REASON="drop the canary")

    assert good.status_code == 200, good.json()
    assert Route.objects.get(name="chat").weights() == {"stable": 100}
    change = AuditEvent.objects.get(action="weights")
    assert (change.before["weights"], change.reason) == ({"canary": 10, "stable": 90}, "drop the canary")


@pytest.mark.parametrize(("targets", "message"), [
    ([{"deployment": "stable", "weight": 50}], "100"),
    ([{"deployment": "stable", "weight": 50}, {"deployment": "stable", "weight": 50}], "repeated"),
    ([{"deployment": "nope", "weight": 100}], "does not exist"),
    ([{"deployment": "stable", "weight": "100"}], "valid integer"),
    ([{"deployment": "stable", "weight": 100, "sticky": True}], "Unknown field"),
    ([], "at least one target"),
])
def test_creating_a_route_with_bad_targets_creates_nothing(admin_api, registry, targets, message):
    before = everything()
    response = post(admin_api, "/routes/", {"name": "new-route", "targets": targets})
    assert response.status_code == 400
    assert message in json.dumps(response.json()["targets"])
    assert everything() == before


def test_names_with_slashes_and_dots_work_in_urls(admin_api, registry):
    response = post(admin_api, "/routes/",
                    {"name": "openai/gpt-4.1", "targets": [{"deployment": "stable", "weight": 100}]})
    assert response.status_code == 201
    assert admin_api.get(f"{API}/routes/openai/gpt-4.1").json()["name"] == "openai/gpt-4.1"
    changed = put(admin_api, "/routes/openai/gpt-4.1/weights/", {"weights": {"stable": 100}, "reason": "same"})
    assert changed.status_code == 200
    assert admin_api.get(f"{API}/routes/openai/gpt-4.1/weights/history").json()["count"] == 1


def test_deleting_a_deployment_in_use_is_refused_with_409(admin_api, registry):
    before = everything()
    response = admin_api.delete(f"{API}/deployments/canary")
    assert response.status_code == 409 and "chat" in response.json()["detail"]
    assert everything() == before


def test_deleting_a_route_is_audited_with_its_last_state(admin_api, registry):
    response = admin_api.delete(f"{API}/routes/chat", HTTP_X_AUDIT_REASON="retired")
    assert response.status_code == 204
    assert not Route.objects.exists()
    gone = AuditEvent.objects.get(action="delete")
    assert (gone.object_type, gone.before["weights"], gone.reason) == ("route", {"canary": 10, "stable": 90}, "retired")


# --- Providers ------------------------------------------------------------------------------


def test_creating_a_provider_records_who_did_it(admin_api, admin_user):
    response = post(admin_api, "/providers/", {"name": "acme", "base_url": "https://api.acme.test/v1"},
                    HTTP_X_AUDIT_REASON="new vendor")
    assert response.status_code == 201
    event = AuditEvent.objects.get()
    assert (event.action, event.actor, event.user, event.reason) == ("create", "alice", admin_user, "new vendor")
    assert event.after["base_url"] == "https://api.acme.test/v1" and event.before is None


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "p", "base_url": "https://user:pw@api.acme.test/v1"}, "base_url"),
    ({"name": "p", "base_url": "ftp://api.acme.test/v1"}, "base_url"),
    ({"name": "p", "base_url": "http://10.0.0.5/v1"}, "base_url"),
    ({"name": "p", "base_url": "https://api.acme.test/v1", "connect_timeout": "fast"}, "connect_timeout"),
    ({"name": "p", "base_url": "https://api.acme.test/v1", "enabled": "maybe"}, "enabled"),
    ({"name": "p", "base_url": "https://api.acme.test/v1", "colour": "red"}, "colour"),
    ({"name": "has space", "base_url": "https://api.acme.test/v1"}, "name"),
    ({"base_url": "https://api.acme.test/v1"}, "name"),
])
@override_settings(ALLOW_PRIVATE_UPSTREAMS=False)
def test_bad_provider_input_is_rejected_naming_the_field(admin_api, body, field):
    response = post(admin_api, "/providers/", body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Provider.objects.exists() and not AuditEvent.objects.exists()


def test_malformed_json_is_a_400(admin_api):
    response = admin_api.post(f"{API}/providers/", '{"name": "p",', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Provider.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096)
def test_an_oversized_body_is_a_413_json_error(admin_api):
    response = post(admin_api, "/providers/",
                    {"name": "p", "base_url": "https://api.acme.test/v1", "notes": "x" * 5000})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]
    assert not Provider.objects.exists()


def test_unknown_names_and_ids_are_json_404s(admin_api):
    for url in ("/providers/nope", "/deployments/nope", "/routes/nope", "/keys/999", "/gateway-keys/999",
                "/audit/999", "/events/999", "/circuits/999"):
        response = admin_api.get(f"{API}{url}")
        assert response.status_code == 404, url
        assert "detail" in response.json()


def test_providers_filter_by_kind_and_reject_unknown_kinds(viewer_api, registry):
    assert viewer_api.get(f"{API}/providers/", {"kind": "openai"}).json()["count"] == 1
    response = viewer_api.get(f"{API}/providers/", {"kind": "carrier-pigeon"})
    assert response.status_code == 400 and "kind" in response.json()


def test_deleting_a_provider_audits_the_keys_deleted_with_it(admin_api):
    provider = Provider.objects.create(name="old", base_url="http://127.0.0.1:9/v1")
    key = ApiKey(provider=provider, label="k")
    key.set_secret("sk-old-provider-key-01")
    key.save()

    assert admin_api.delete(f"{API}/providers/old").status_code == 204

    deleted = AuditEvent.objects.filter(action="delete", actor="alice")
    assert sorted(deleted.values_list("object_type", "object_repr")) == [("apikey", "old/k"), ("provider", "old")]
    assert not ApiKey.objects.exists()


# --- API keys -------------------------------------------------------------------------------


def test_a_key_secret_is_write_only_and_shown_masked(admin_api, registry):
    response = post(admin_api, "/keys/", {"provider": "sim", "label": "second", "secret": "sk-brand-new-secret-9f3a"})

    assert response.status_code == 201
    assert "secret" not in response.json()
    assert response.json()["masked"] == "sk-…9f3a"
    assert "brand-new" not in json.dumps(admin_api.get(f"{API}/keys/{response.json()['id']}").json())
    assert ApiKey.objects.get(label="second").reveal() == "sk-brand-new-secret-9f3a"


def test_a_key_needs_a_secret_when_created(admin_api, registry):
    before = everything()
    assert "secret" in post(admin_api, "/keys/", {"provider": "sim", "label": "x"}).json()
    assert "secret" in post(admin_api, "/keys/", {"provider": "sim", "label": "x", "secret": ""}).json()
    assert "provider" in post(admin_api, "/keys/", {"provider": "nope", "label": "x", "secret": "sk-1"}).json()
    assert everything() == before


def test_updating_a_key_with_a_secret_rotates_it_and_without_keeps_it(admin_api, registry):
    key = ApiKey.objects.get()
    assert patch(admin_api, f"/keys/{key.pk}", {"rpm_limit": 60}).status_code == 200
    assert ApiKey.objects.get().reveal() == "sk-existing-secret-0001"

    response = patch(admin_api, f"/keys/{key.pk}", {"secret": "sk-rotated-secret-7777"})

    assert response.json()["masked"] == "sk-…7777"
    assert ApiKey.objects.get().reveal() == "sk-rotated-secret-7777"
    update = AuditEvent.objects.filter(action="update").first()
    assert update.before["secret_hint"] == "sk-…0001" and update.after["secret_hint"] == "sk-…7777"


def test_admins_may_set_a_key_back_to_active_or_disabled_only(admin_api, registry):
    key = ApiKey.objects.get()
    ApiKey.objects.filter(pk=key.pk).update(state=KeyState.RATE_LIMITED,
                                            rate_limited_until=timezone.now() + timedelta(minutes=1))

    bad = patch(admin_api, f"/keys/{key.pk}", {"state": "invalid"})
    good = patch(admin_api, f"/keys/{key.pk}", {"state": "active"})

    assert bad.status_code == 400 and "state" in bad.json()
    assert good.status_code == 200
    assert (good.json()["state"], good.json()["rate_limited_until"]) == ("active", None)


def test_keys_filter_by_provider_name_and_state(viewer_api, registry):
    other = Provider.objects.create(name="other", base_url="http://127.0.0.1:9/v1")
    spare = ApiKey(provider=other, label="spare", state=KeyState.DISABLED)
    spare.set_secret("sk-spare-000000001")
    spare.save()
    assert [k["label"] for k in viewer_api.get(f"{API}/keys/", {"provider": "other"}).json()["results"]] == ["spare"]
    assert [k["label"] for k in viewer_api.get(f"{API}/keys/", {"state": "active"}).json()["results"]] == ["main"]


def test_a_deployment_shows_its_context_window_and_its_source(viewer_api, registry):
    Deployment.objects.filter(name="stable").update(catalogue_window=128000, provider_window=64000)

    body = viewer_api.get(f"{API}/deployments/stable").json()
    unknown = viewer_api.get(f"{API}/deployments/canary").json()

    assert (body["context_window"], body["context_window_source"]) == (64000, "provider_metadata")
    assert body["context_windows"] == {"typed": None, "learned_from_error": None, "provider_metadata": 64000,
                                       "catalogue": 128000}
    assert (unknown["context_window"], unknown["context_window_source"]) == (None, "unknown")


def test_a_typed_context_window_wins_and_null_gives_the_discovered_one_back(admin_api, registry):
    Deployment.objects.filter(name="stable").update(learned_window=4096)

    typed = patch(admin_api, "/deployments/stable", {"context_window": 8000})
    cleared = patch(admin_api, "/deployments/stable", {"context_window": None})

    assert (typed.json()["context_window"], typed.json()["context_window_source"]) == (8000, "typed")
    assert (cleared.json()["context_window"], cleared.json()["context_window_source"]) == (4096, "learned_from_error")


@pytest.mark.parametrize("value", [0, -5, "4096", 1.5])
def test_a_context_window_that_is_not_a_whole_number_of_tokens_is_refused_naming_it(admin_api, registry, value):
    before = everything()

    response = patch(admin_api, "/deployments/stable", {"context_window": value})

    assert response.status_code == 400 and "context_window" in response.json()
    assert everything() == before


@pytest.mark.parametrize("field", ["learned_window", "provider_window", "catalogue_window"])
def test_discovered_windows_cannot_be_written(admin_api, registry, field):
    before = everything()

    response = patch(admin_api, "/deployments/stable", {field: 100})

    assert response.status_code == 400 and field in response.json()
    assert everything() == before


def test_deployments_filter_by_provider(viewer_api, registry):
    assert viewer_api.get(f"{API}/deployments/", {"provider": "sim"}).json()["count"] == 2
    assert viewer_api.get(f"{API}/deployments/", {"provider": "other"}).json()["count"] == 0


# --- Gateway keys ----------------------------------------------------------------------------


def test_a_gateway_key_is_shown_in_full_exactly_once(admin_api, registry):
    created = post(admin_api, "/gateway-keys/", {"name": "billing app", "all_routes": False, "routes": ["chat"]})

    assert created.status_code == 201
    plaintext = created.json()["key"]
    stored = GatewayKey.objects.get()
    assert stored.key_hash == hash_gateway_key(plaintext) and plaintext not in stored.key_hash
    assert plaintext.startswith(created.json()["prefix"])
    again = admin_api.get(f"{API}/gateway-keys/{stored.pk}").json()
    assert "key" not in again and again["routes"] == ["chat"]
    assert plaintext not in json.dumps(admin_api.get(f"{API}/audit/").json())


def test_a_gateway_key_for_an_unknown_route_is_rejected(admin_api, registry):
    response = post(admin_api, "/gateway-keys/", {"name": "x", "all_routes": False, "routes": ["nope"]})
    assert response.status_code == 400 and "routes" in response.json()
    assert not GatewayKey.objects.exists()


def test_a_gateway_key_can_be_disabled_and_deleted(admin_api, gateway_key):
    assert patch(admin_api, f"/gateway-keys/{gateway_key.pk}", {"enabled": False}).json()["enabled"] is False
    assert admin_api.delete(f"{API}/gateway-keys/{gateway_key.pk}").status_code == 204
    assert list(AuditEvent.objects.values_list("action", flat=True)) == ["delete", "update"]


# --- Who may do what --------------------------------------------------------------------------

CREATES = {
    "/providers/": {"name": "p2", "base_url": "http://127.0.0.1:9/v1"},
    "/keys/": {"provider": "sim", "label": "k2", "secret": "sk-someone-else-0001"},
    "/deployments/": {"name": "d2", "provider": "sim", "upstream_model": "m"},
    "/routes/": {"name": "r2", "targets": [{"deployment": "stable", "weight": 100}]},
    "/gateway-keys/": {"name": "g2"},
}
OBJECT_TYPES = {
    "/providers/": "provider", "/keys/": "apikey", "/deployments/": "deployment", "/routes/": "route",
    "/gateway-keys/": "gatewaykey",
}
DETAILS = {
    "/providers/": "/providers/sim", "/keys/": "/keys/{key}", "/deployments/": "/deployments/canary",
    "/routes/": "/routes/chat", "/gateway-keys/": "/gateway-keys/{gateway_key}",
}


def _detail(collection, gateway_key):
    return DETAILS[collection].format(key=ApiKey.objects.get(label="main").pk, gateway_key=gateway_key.pk)


@pytest.mark.parametrize("collection", CREATES)
def test_staff_can_create_read_update_and_delete(admin_api, registry, gateway_key, collection):
    created = post(admin_api, collection, CREATES[collection])
    assert created.status_code == 201, created.json()
    detail = _detail(collection, gateway_key)
    assert admin_api.get(f"{API}{collection}").status_code == 200
    assert admin_api.get(f"{API}{detail}").status_code == 200
    assert patch(admin_api, detail, {}).status_code == 200
    mine = AuditEvent.objects.filter(object_type=OBJECT_TYPES[collection], actor="alice")
    assert mine.filter(action="create").count() == 1
    assert mine.filter(action="update").count() == 1


@pytest.mark.parametrize("collection", CREATES)
def test_the_wrong_users_cannot_change_anything(anon_api, outsider_api, viewer_api, registry, gateway_key, collection):
    detail = _detail(collection, gateway_key)
    before = everything()
    for client, status in ((anon_api, 401), (outsider_api, 403), (viewer_api, 403)):
        assert post(client, collection, CREATES[collection]).status_code == status
        assert patch(client, detail, {}).status_code == status
        assert client.delete(f"{API}{detail}").status_code == status
    assert everything() == before


@pytest.mark.parametrize("collection", [*CREATES, "/audit/", "/events/", "/circuits/"])
def test_viewers_read_outsiders_and_anonymous_do_not(anon_api, outsider_api, viewer_api, registry, collection):
    assert viewer_api.get(f"{API}{collection}").status_code == 200
    assert outsider_api.get(f"{API}{collection}").status_code == 403
    anonymous = anon_api.get(f"{API}{collection}")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Token")


# --- Audit trail, events, circuits --------------------------------------------------------------


def test_the_audit_trail_filters_by_type_action_actor_object_and_time(admin_api, registry):
    post(admin_api, "/providers/", {"name": "p2", "base_url": "http://127.0.0.1:9/v1"})
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "x"})
    now = timezone.now()

    def count(**query):
        return admin_api.get(f"{API}/audit/", query).json()["count"]

    assert count(object_type="provider") == 1
    assert count(action="weights") == 1
    assert count(actor="alice") == 2 and count(actor="bob") == 0
    assert count(object_type="route", object_id=str(registry.pk)) == 1
    assert count(actor="alice", since=(now - timedelta(minutes=1)).isoformat()) == 2
    assert count(until=(now - timedelta(minutes=1)).isoformat()) == 0
    assert count(since=(now + timedelta(minutes=1)).isoformat()) == 0
    assert "action" in admin_api.get(f"{API}/audit/", {"action": "explode"}).json()
    assert "since" in admin_api.get(f"{API}/audit/", {"since": "last tuesday"}).json()


def test_audit_events_events_and_circuits_are_read_only(admin_api, registry):
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "x"})
    circuit = DeploymentCircuit.objects.create(deployment=Deployment.objects.get(name="canary"), state="open")
    audit_id, event_id = AuditEvent.objects.get(action="weights").pk, Event.objects.get().pk
    for url in (f"/audit/{audit_id}", f"/events/{event_id}", f"/circuits/{circuit.pk}"):
        assert admin_api.delete(f"{API}{url}").status_code == 405
        assert patch(admin_api, url, {}).status_code == 405
    assert post(admin_api, "/audit/", {}).status_code == 405
    assert AuditEvent.objects.filter(action="weights").count() == 1 and Event.objects.count() == 1


def test_events_and_circuits_filter_by_route_kind_and_deployment(viewer_api, admin_api, registry):
    put(admin_api, "/routes/chat/weights", {"weights": {"stable": 50, "canary": 50}, "reason": "x"})
    DeploymentCircuit.objects.create(deployment=Deployment.objects.get(name="canary"), state="open", reason="5 errors")

    events = viewer_api.get(f"{API}/events/", {"kind": "weights", "route": "chat"}).json()["results"]
    circuits = viewer_api.get(f"{API}/circuits/", {"state": "open"}).json()["results"]

    assert [e["route"] for e in events] == ["chat"] and "canary 10→50" in events[0]["message"]
    assert viewer_api.get(f"{API}/events/", {"kind": "health"}).json()["count"] == 0
    assert [(c["deployment"], c["reason"]) for c in circuits] == [("canary", "5 errors")]
    assert viewer_api.get(f"{API}/circuits/", {"deployment": "stable"}).json()["count"] == 0


# --- OpenAPI ----------------------------------------------------------------------------------


def test_the_schema_generates_without_warnings_or_errors(tmp_path, capsys):
    from django.core.management import call_command
    from drf_spectacular.drainage import GENERATOR_STATS

    GENERATOR_STATS.reset()  # the counters are per process; count only this run
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    except Exception as failure:  # noqa: BLE001  (show what spectacular complained about)
        pytest.fail(f"{failure}\n{capsys.readouterr().err}")
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/v1/routes/{name}/weights/" in schema and "If-Match" in schema


def test_the_docs_page_loads_only_local_assets(viewer_api):
    import re
    from urllib.parse import urlsplit

    from django.contrib.staticfiles import finders

    page = viewer_api.get("/api/docs/")
    html = page.content.decode()

    assert page.status_code == 200
    foreign = {u for u in re.findall(r"""https?://[^\s"'<>)]+""", html) if urlsplit(u).hostname not in ("testserver",)}
    assert not foreign, foreign
    assets = re.findall(r"""(?:src|href)=["']/static/([^"'?#]+)""", html)
    assert assets and all(finders.find(asset) for asset in assets), assets
    assert viewer_api.get("/api/schema/", HTTP_ACCEPT="application/json").status_code == 200


@pytest.mark.django_db
def test_the_request_log_is_readable_by_viewers_filterable_and_read_only(admin_api, viewer_api, anon_api, outsider_api):
    from routing.models import RequestLog

    RequestLog.objects.create(request_id="req_1", route_name="chat", outcome="ok", status=200)
    RequestLog.objects.create(request_id="req_2", route_name="chat", outcome="server_error", status=502,
                              error="every upstream failed")
    failures = viewer_api.get("/api/v1/request-log/?outcome=server_error")
    assert failures.status_code == 200
    assert [r["request_id"] for r in failures.json()["results"]] == ["req_2"]
    assert admin_api.post("/api/v1/request-log/", {"request_id": "x"}, format="json").status_code == 405
    assert anon_api.get("/api/v1/request-log/").status_code == 401
    assert outsider_api.get("/api/v1/request-log/").status_code == 403
    assert admin_api.get("/api/v1/request-log/?outcome=nonsense").status_code == 400
    assert RequestLog.objects.count() == 2
