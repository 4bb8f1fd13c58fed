"""A newcomer's map of the API: the index page lists every collection, and the docs group operations by what
they act on (never one catch-all "v1" tag)."""

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

EVERY_COLLECTION = {
    "providers", "keys", "deployments", "routes", "gateway-keys", "audit", "events", "circuits", "request-log",
    "probe-targets", "probe-results", "rollups", "rollouts", "load-tests", "alerts", "alert-rules", "silences",
    "maintenance-windows", "notification-policies", "inhibit-rules", "alert-channels", "alert-deliveries",
}


def test_the_api_index_lists_every_collection_and_each_link_answers(viewer_api):
    index = viewer_api.get("/api/v1/", HTTP_ACCEPT="application/json")
    assert index.status_code == 200 and set(index.json()) == EVERY_COLLECTION
    for name, url in index.json().items():
        assert url == f"http://testserver/api/v1/{name}", url
        answer = viewer_api.get(url, HTTP_ACCEPT="application/json")
        # The rollup series needs a deployment to read: it says so, naming the parameter.
        expected = (400, "deployment") if name == "rollups" else (200, None)
        assert (answer.status_code, next(iter(answer.json())) if answer.status_code == 400 else None) == expected


def test_the_api_index_refuses_anonymous_callers():
    assert APIClient().get("/api/v1/", HTTP_ACCEPT="application/json").status_code == 401


def test_every_operation_in_the_docs_is_tagged_by_what_it_acts_on(viewer_api):
    schema = viewer_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    tags = {}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("tags"), f"{method} {path} has no tag"
            tags.setdefault(operation["tags"][0], []).append(f"{method} {path}")
    assert "v1" not in tags and all("-" not in tag for tag in tags), sorted(tags)
    assert {"rollouts", "load tests", "rollups", "probe targets", "alert rules", "maintenance windows"} <= set(tags)
    assert tags["probe targets"] and all("/api/v1/probe-targets" in op for op in tags["probe targets"])
