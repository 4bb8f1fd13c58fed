"""The API refuses what its schema forbids, and the schema says what the API answers
(the fuzzing run in test_schema_fuzz.py checks the same at large)."""

import pytest
from django.core.management import call_command

from tests.routing import test_api
from tests.routing.test_api import everything, patch, post

pytestmark = pytest.mark.django_db
registry = test_api.registry


@pytest.mark.parametrize("query", [
    "offset=null", "offset=-1", "offset=1.5", "limit=0", "limit=abc", "limit=1001",
])
def test_a_malformed_page_is_a_400_naming_the_parameter(viewer_api, registry, query):
    response = viewer_api.get(f"/api/v1/providers?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()


@pytest.mark.parametrize("url", [
    "/api/v1/keys?enabled=-34", "/api/v1/keys?enabled=yes", "/api/v1/audit?until=", "/api/v1/audit?until=yesterday",
    "/api/v1/keys?state=", "/api/v1/events?api_key=abc", "/api/v1/events?api_key=99999999999999999999",
])
def test_a_malformed_filter_is_a_400_not_silently_ignored(viewer_api, registry, url):
    assert viewer_api.get(url).status_code == 400


def test_well_formed_filters_still_filter(viewer_api, registry):
    assert viewer_api.get("/api/v1/keys?enabled=true").json()["count"] == 1
    assert viewer_api.get("/api/v1/keys?enabled=false").json()["count"] == 0
    assert viewer_api.get("/api/v1/events?api_key=12345").json()["count"] == 0  # unknown id: nothing, not an error
    assert viewer_api.get("/api/v1/providers?limit=1&offset=0").json()["count"] == 1


@pytest.mark.parametrize("url, body, field", [
    ("/gateway-keys", {"name": "app", "enabled": 0}, "enabled"),
    ("/gateway-keys", {"name": "app", "routes": {}}, "routes"),
    ("/deployments", {"name": "d", "provider": "sim", "upstream_model": "m", "display_name": 0}, "display_name"),
    ("/deployments", {"name": "d", "provider": "sim", "upstream_model": "m", "input_price_per_mtok": 1.5},
     "input_price_per_mtok"),
    ("/keys", {"provider": "sim", "label": "emoji", "secret": "sk-🔑-1234"}, "secret"),
    ("/keys", {"provider": "sim", "label": "spaced", "secret": "sk 1234"}, "secret"),
])
def test_values_of_the_wrong_type_are_refused_not_coerced(admin_api, registry, url, body, field):
    before = everything()
    response = post(admin_api, url, body)
    assert response.status_code == 400 and field in response.json()
    assert everything() == before


def test_a_form_encoded_body_is_a_415(admin_api, registry):
    response = admin_api.post("/api/v1/providers", {"name": "x", "base_url": "https://a.example.com/v1"})
    assert response.status_code == 415


def test_an_unknown_api_url_is_a_json_404_for_any_method(admin_api):
    for method in ("get", "delete"):
        response = getattr(admin_api, method)("/api/v1/keys/not-a-number/")
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}


def test_a_patch_with_a_target_missing_its_weight_is_a_400(admin_api, registry):
    response = patch(admin_api, "/routes/chat", {"targets": [{"deployment": "stable"}]})
    assert response.status_code == 400 and "targets" in response.json()


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker, tmp_path_factory):
    import yaml

    path = tmp_path_factory.mktemp("schema") / "schema.yml"
    with django_db_blocker.unblock():
        call_command("spectacular", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_the_schema_documents_the_errors_each_operation_answers(schema):
    update = schema["paths"]["/api/v1/providers/{name}/"]["patch"]["responses"]
    assert {"200", "400", "401", "403", "404", "409", "413", "415", "429"} <= set(update)
    listing = schema["paths"]["/api/v1/providers/"]["get"]["responses"]
    assert {"200", "400", "401", "403"} <= set(listing) and "409" not in listing


@pytest.mark.parametrize("component, field", [
    ("AuditEvent", "user"), ("Event", "deployment"), ("Event", "route"), ("ProbeTarget", "api_key_label"),
    ("ProbeResult", "api_key_label"), ("RequestLog", "deployment"), ("RequestLog", "gateway_key"),
])
def test_fields_that_can_be_null_are_marked_nullable(schema, component, field):
    assert schema["components"]["schemas"][component]["properties"][field].get("nullable") is True


def test_request_bodies_that_refuse_unknown_fields_say_so(schema):
    for name in ("ProviderRequest", "PatchedProviderRequest", "RouteTargetRequest", "WeightsChangeRequest"):
        assert schema["components"]["schemas"][name]["additionalProperties"] is False


def test_the_schema_bounds_limit_and_offset(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/providers/"]["get"]["parameters"]}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert parameters["offset"] == {"type": "integer", "minimum": 0}
