"""Admin pages of the routing registry: write-only secrets, audited saves,
validated weights, read-only records."""

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from routing.models import (
    ApiKey,
    AuditEvent,
    Deployment,
    Event,
    GatewayKey,
    Provider,
    Route,
    hash_gateway_key,
)
from tests.factories import canary_world

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-test-secret-4242"


def admin_form_data(response):
    """Return the POST data a browser would send for the admin form in `response`, unchanged."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            listed = [str(v) for v in value] if isinstance(value, list) else str(value)
            data[form.add_prefix(name)] = "on" if value is True else listed
    return data


@pytest.fixture
def browser(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def route():
    return canary_world(secret=SECRET, key_label="main", models=("stable", "canary")).route


def url(model, page, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


def routing_models():
    return [model for model in admin.site._registry if model._meta.app_label == "routing"]


def test_every_routing_page_opens_for_staff(browser, route):
    Event.objects.create(kind="weights", route=route, message="m")
    AuditEvent.objects.create(actor="a", action="create", object_type="route", object_id="1", object_repr="r")
    for model in routing_models():
        assert browser.get(url(model, "changelist")).status_code == 200, model
        obj = model._default_manager.first()
        if obj is not None:
            assert browser.get(url(model, "change", obj.pk)).status_code == 200, model


def test_people_without_staff_rights_are_sent_to_the_login_page(viewer_user, route):
    client = Client()
    client.force_login(viewer_user)
    response = client.get(url(Route, "changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


# --- API key secrets --------------------------------------------------------------------------


def test_a_new_key_needs_its_secret_and_is_stored_encrypted(browser, route, admin_user):
    data = {"provider": route.targets.first().deployment.provider.pk, "label": "second", "enabled": "on",
            "state": "active"}
    refused = browser.post(url(ApiKey, "add"), data)
    assert refused.status_code == 200 and "A new key needs its secret." in refused.content.decode()
    assert not ApiKey.objects.filter(label="second").exists()

    browser.post(url(ApiKey, "add"), {**data, "secret": "sk-second-secret-7777"})

    key = ApiKey.objects.get(label="second")
    assert key.reveal() == "sk-second-secret-7777" and "second-secret" not in key.secret_encrypted
    audit = AuditEvent.objects.get(object_type="apikey", action="create")
    assert (audit.actor, audit.user, audit.after["secret_hint"]) == ("alice", admin_user, "sk-…7777")


def test_the_change_page_never_shows_the_secret_and_blank_keeps_it(browser, route):
    key = ApiKey.objects.get()
    page = browser.get(url(ApiKey, "change", key.pk))
    assert SECRET not in page.content.decode() and "sk-…4242" in page.content.decode()

    data = admin_form_data(page) | {"rpm_limit": "60"}
    assert browser.post(url(ApiKey, "change", key.pk), data).status_code == 302
    assert ApiKey.objects.get().reveal() == SECRET and ApiKey.objects.get().rpm_limit == 60

    browser.post(url(ApiKey, "change", key.pk), data | {"secret": "sk-rotated-by-admin-0000"})
    assert ApiKey.objects.get().reveal() == "sk-rotated-by-admin-0000"
    assert AuditEvent.objects.filter(object_type="apikey", action="update").count() == 2


def test_a_refused_form_does_not_echo_the_typed_secret(browser, route):
    key = ApiKey.objects.get()
    data = admin_form_data(browser.get(url(ApiKey, "change", key.pk)))
    refused = browser.post(url(ApiKey, "change", key.pk),
                           data | {"secret": "sk-typed-but-refused-5555", "rpm_limit": "-1"})
    assert refused.status_code == 200
    assert "typed-but-refused" not in refused.content.decode()
    assert ApiKey.objects.get().reveal() == SECRET


def test_people_may_set_a_key_active_or_disabled_but_not_invalid(browser, route):
    key = ApiKey.objects.get()
    data = admin_form_data(browser.get(url(ApiKey, "change", key.pk)))
    refused = browser.post(url(ApiKey, "change", key.pk), data | {"state": "invalid"})
    assert refused.status_code == 200 and ApiKey.objects.get().state == "active"
    assert browser.post(url(ApiKey, "change", key.pk), data | {"state": "disabled"}).status_code == 302
    assert ApiKey.objects.get().state == "disabled"


def test_keys_added_inline_on_a_provider_are_audited_one_by_one(browser, route):
    provider = Provider.objects.get()
    data = admin_form_data(browser.get(url(Provider, "change", provider.pk)))
    data |= {"keys-TOTAL_FORMS": "2", "keys-1-label": "backup", "keys-1-secret": "sk-backup-secret-1234",
             "keys-1-enabled": "on", "keys-1-state": "active", "keys-1-provider": str(provider.pk)}

    response = browser.post(url(Provider, "change", provider.pk), data)

    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    assert ApiKey.objects.get(label="backup").reveal() == "sk-backup-secret-1234"
    assert AuditEvent.objects.filter(object_type="apikey", action="create", actor="alice").count() == 1
    assert AuditEvent.objects.filter(object_type="provider", action="update", actor="alice").count() == 1


# --- Routes and weights -----------------------------------------------------------------------


def _route_data(browser, route, **weights):
    data = admin_form_data(browser.get(url(Route, "change", route.pk)))
    for i in range(int(data["targets-TOTAL_FORMS"])):
        deployment = Deployment.objects.get(pk=data[f"targets-{i}-deployment"])
        data[f"targets-{i}-weight"] = str(weights.get(deployment.name, data[f"targets-{i}-weight"]))
    return data


def test_changing_weights_in_the_admin_is_validated_versioned_and_audited(browser, route):
    response = browser.post(url(Route, "change", route.pk),
                            _route_data(browser, route, stable=50, canary=50) | {"reason": "ramp"})

    assert response.status_code == 302
    assert Route.objects.get().weights() == {"canary": 50, "stable": 50}
    assert Route.objects.get().version == route.version + 1
    change = AuditEvent.objects.get(action="weights")
    assert (change.actor, change.reason, change.before["weights"]) == ("alice", "ramp", {"canary": 10, "stable": 90})
    assert Event.objects.get().kind == "weights"
    assert AuditEvent.objects.get(object_type="route", action="update").after["weights"] == {"canary": 50, "stable": 50}


def test_an_admin_save_on_top_of_a_newer_weight_change_is_refused(browser, route, admin_user):
    from routing.weights import apply_weights

    opened = _route_data(browser, route, stable=50, canary=50) | {"reason": "from an old tab"}
    apply_weights(route, {"stable": 80, "canary": 20}, reason="slider", actor="bob")  # meanwhile, elsewhere
    response = browser.post(url(Route, "change", route.pk), opened)
    assert response.status_code == 200
    assert "This route changed while you were editing it (it is now at version 2)" in response.text
    assert Route.objects.get().weights() == {"canary": 20, "stable": 80}  # the slider's change stands
    fresh = _route_data(browser, route, stable=50, canary=50) | {"reason": "after reloading"}
    assert browser.post(url(Route, "change", route.pk), fresh).status_code == 302
    assert Route.objects.get().weights() == {"canary": 50, "stable": 50}


@pytest.mark.parametrize(("weights", "message"), [
    ({"stable": 50, "canary": 49}, "not 99"),
    ({"stable": 50, "canary": 150}, "less than or equal to 100"),
])
def test_a_bad_split_in_the_admin_is_refused_and_changes_nothing(browser, route, weights, message):
    response = browser.post(url(Route, "change", route.pk), _route_data(browser, route, **weights))

    assert response.status_code == 200 and message in response.content.decode()
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}
    assert Route.objects.get().version == route.version
    assert not AuditEvent.objects.filter(object_type="route").exists()


def test_a_disabled_deployment_cannot_get_traffic_through_the_admin(browser, route):
    Deployment.objects.filter(name="canary").update(enabled=False)
    response = browser.post(url(Route, "change", route.pk), _route_data(browser, route, stable=50, canary=50))
    assert response.status_code == 200 and "disabled" in response.content.decode()
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}


def test_deleting_through_the_admin_is_audited(browser, route):
    response = browser.post(url(Route, "delete", route.pk), {"post": "yes"})
    assert response.status_code == 302 and not Route.objects.exists()
    gone = AuditEvent.objects.get(action="delete")
    assert (gone.object_type, gone.actor, gone.before["weights"]) == ("route", "alice", {"canary": 10, "stable": 90})


def test_deleting_a_provider_in_the_admin_audits_its_keys_too(browser):
    provider = Provider.objects.create(name="old", base_url="http://127.0.0.1:9/v1")
    key = ApiKey(provider=provider, label="k")
    key.set_secret("sk-old-provider-key-01")
    key.save()

    assert browser.post(url(Provider, "delete", provider.pk), {"post": "yes"}).status_code == 302

    deleted = AuditEvent.objects.filter(action="delete", actor="alice")
    assert sorted(deleted.values_list("object_type", "object_repr")) == [("apikey", "old/k"), ("provider", "old")]


# --- Gateway keys -------------------------------------------------------------------------------


def test_a_new_gateway_key_is_shown_once_and_only_its_hash_is_stored(browser, route):
    response = browser.post(url(GatewayKey, "add"), {"name": "billing", "all_routes": "on", "enabled": "on"},
                            follow=True)

    shown = [str(m) for m in response.context["messages"] if "will not be shown again" in str(m)]
    assert len(shown) == 1
    plaintext = shown[0].rsplit(" ", 1)[-1]
    key = GatewayKey.objects.get()
    assert key.key_hash == hash_gateway_key(plaintext) and plaintext.startswith(key.prefix)
    again = browser.get(url(GatewayKey, "change", key.pk)).content.decode()
    assert plaintext not in again and key.prefix in again
    assert plaintext not in str(list(AuditEvent.objects.values()))


# --- Read-only records --------------------------------------------------------------------------


@pytest.mark.parametrize("model", [AuditEvent, Event])
def test_audit_and_event_records_cannot_be_added_changed_or_deleted(browser, route, model):
    if model is AuditEvent:
        obj = AuditEvent.objects.create(actor="a", action="create", object_type="route", object_id="1", object_repr="r")
    else:
        obj = Event.objects.create(kind="weights", route=route, message="m")
    count = model.objects.count()

    assert browser.get(url(model, "add")).status_code == 403
    assert browser.post(url(model, "change", obj.pk), {"message": "x", "actor": "x"}).status_code == 403
    assert browser.post(url(model, "delete", obj.pk), {"post": "yes"}).status_code == 403
    assert model.objects.count() == count


# --- Fallbacks --------------------------------------------------------------------------------


def _with_fallbacks(data, *names):
    data |= {"fallbacks-TOTAL_FORMS": str(len(names)), "fallbacks-INITIAL_FORMS": "0"}
    for i, name in enumerate(names):
        data |= {f"fallbacks-{i}-deployment": str(Deployment.objects.get(name=name).pk),
                 f"fallbacks-{i}-position": str(i + 1)}
    return data


def test_the_route_page_has_a_fallbacks_inline(browser, route):
    page = browser.get(url(Route, "change", route.pk)).content.decode()
    assert "fallbacks (tried in order after every weighted target failed)" in page.lower()
    assert 'name="fallbacks-TOTAL_FORMS"' in page


def test_fallbacks_set_in_the_admin_are_versioned_and_audited(browser, route):
    Deployment.objects.create(name="spare", provider=route.targets.first().deployment.provider, upstream_model="x")
    data = _with_fallbacks(_route_data(browser, route, stable=100, canary=0), "canary", "spare")

    response = browser.post(url(Route, "change", route.pk), data | {"reason": "canary on failure"})

    assert response.status_code == 302
    assert Route.objects.get().fallback_chain() == ["canary", "spare"]
    change = AuditEvent.objects.get(action="weights")
    assert (change.before["fallbacks"], change.after["fallbacks"]) == ([], ["canary", "spare"])
    assert browser.get(url(Route, "changelist")).content.decode().count("canary → spare") == 1


def test_a_weighted_target_cannot_be_a_fallback_in_the_admin(browser, route):
    response = browser.post(url(Route, "change", route.pk), _with_fallbacks(_route_data(browser, route), "stable"))

    assert response.status_code == 200 and "weight 90" in response.content.decode()
    assert Route.objects.get().fallback_chain() == []
    assert Route.objects.get().version == route.version


def test_a_new_route_gets_its_fallbacks_from_the_add_page(browser, route):
    data = admin_form_data(browser.get(url(Route, "add")))
    stable, canary = Deployment.objects.get(name="stable"), Deployment.objects.get(name="canary")
    data |= {"name": "solo", "targets-TOTAL_FORMS": "1", "targets-INITIAL_FORMS": "0",
             "targets-0-deployment": str(stable.pk), "targets-0-weight": "100"}

    response = browser.post(url(Route, "add"), _with_fallbacks(data, "canary"))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Route.objects.get(name="solo").fallback_chain() == [canary.name]
    assert AuditEvent.objects.get(object_type="route", action="create").after["fallbacks"] == ["canary"]


def test_a_deployment_shows_its_context_window_in_use_and_where_it_came_from(browser, route):
    stable = Deployment.objects.get(name="stable")
    Deployment.objects.filter(pk=stable.pk).update(learned_window=20000, provider_window=32768,
                                                   learned_window_error="HTTP 400: maximum context length is 20000")

    page = browser.get(url(Deployment, "change", stable.pk)).content.decode()
    listing = browser.get(url(Deployment, "changelist")).content.decode()

    assert "20000 tokens (learned from the provider&#x27;s error)" in page
    assert "maximum context length is 20000" in page and "32768" in page
    assert "20000 tokens (learned from the provider&#x27;s error)" in listing and "unknown" in listing
