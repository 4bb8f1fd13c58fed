"""routing.weights: the one validated path for changing a route's split."""

from dataclasses import asdict

import pytest

from dashboard import live
from routing import weights
from routing.models import AuditEvent, Deployment, Event, Provider, Route, RouteTarget
from tests.factories import canary_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def route():
    return canary_world(secret=None, models=("stable", "canary")).route


@pytest.fixture
def published(monkeypatch):
    """Collect what would be pushed to open dashboards."""
    sent = []
    monkeypatch.setattr(live, "weights_changed", lambda payload: sent.append(("weights", asdict(payload))))
    monkeypatch.setattr(live, "timeline_event", lambda event: sent.append(("timeline", event.payload())))
    return sent


def test_it_saves_the_split_bumps_the_version_and_records_why(route, admin_user, published,
                                                              django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        updated = weights.apply_weights(route, {"stable": 50, "canary": 50}, reason="ramp", actor="alice",
                                        user=admin_user)

    assert Route.objects.get().weights() == {"canary": 50, "stable": 50}
    assert updated.version == route.version + 1 == Route.objects.get().version
    audit = AuditEvent.objects.get(action="weights")
    assert (audit.actor, audit.user, audit.reason) == ("alice", admin_user, "ramp")
    assert audit.before == {"version": 1, "weights": {"canary": 10, "stable": 90}}
    assert audit.after == {"version": 2, "weights": {"canary": 50, "stable": 50}}
    event = Event.objects.get()
    assert (event.kind, event.route, event.message) == ("weights", route, "chat: canary 10→50, stable 90→50")
    assert [kind for kind, _ in published] == ["weights", "timeline"]
    assert published[0][1] | {"at": None} == {
        "route": "chat", "version": 2, "weights": {"canary": 50, "stable": 50}, "actor": "alice", "reason": "ramp",
        "at": None, "fallbacks": [],
    }


def test_dashboards_hear_nothing_before_the_transaction_commits(route, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        weights.apply_weights(route, {"stable": 50, "canary": 50}, reason="ramp", actor="alice")
    assert published == []
    assert callbacks  # they run on commit


@pytest.mark.parametrize(("split", "field"), [
    ({"stable": 50, "canary": 49}, "weights"),
    ({"stable": 50, "canary": 50, "ghost": 0}, "weights.ghost"),
    ({"stable": 100}, "weights"),
    ({"stable": False, "canary": 100}, "weights.stable"),
    ({"stable": 50.5, "canary": 49.5}, "weights.stable"),
    ({"stable": None, "canary": 100}, "weights.stable"),
    ({}, "weights"),
    ("stable=100", "weights"),
])
def test_it_rejects_bad_splits_and_changes_nothing(route, published, split, field):
    with pytest.raises(weights.WeightsInvalid) as rejected:
        weights.apply_weights(route, split, reason="x", actor="alice")
    assert field in rejected.value.errors
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}
    assert Route.objects.get().version == route.version
    assert not AuditEvent.objects.filter(action="weights").exists() and not Event.objects.exists()


def test_it_reports_every_problem_at_once(route):
    Deployment.objects.filter(name="canary").update(enabled=False)
    with pytest.raises(weights.WeightsInvalid) as rejected:
        weights.apply_weights(route, {"stable": 30, "canary": 60}, reason="", actor="alice")
    assert set(rejected.value.errors) == {"weights", "weights.canary", "reason"}
    assert "not 90" in rejected.value.errors["weights"][0]


def test_a_disabled_provider_counts_as_disabled(route):
    Provider.objects.update(enabled=False)
    with pytest.raises(weights.WeightsInvalid) as rejected:
        weights.apply_weights(route, {"stable": 100, "canary": 0}, reason="x", actor="alice")
    assert "Provider 'sim'" in rejected.value.errors["weights.stable"][0]


def test_a_stale_version_is_refused_with_the_current_one(route):
    with pytest.raises(weights.StaleVersion) as stale:
        weights.apply_weights(route, {"stable": 50, "canary": 50}, reason="x", actor="alice", expected_version=7)
    assert stale.value.current == 1
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}


def test_revert_restores_the_previous_split_and_a_second_revert_undoes_it(route):
    weights.apply_weights(route, {"stable": 0, "canary": 100}, reason="all in", actor="alice")

    weights.revert_weights(route, reason="too soon", actor="bob")
    assert Route.objects.get().weights() == {"canary": 10, "stable": 90}
    weights.revert_weights(route, reason="fine after all", actor="bob")
    assert Route.objects.get().weights() == {"canary": 100, "stable": 0}
    assert [e.reason for e in weights.weights_history(route)] == ["fine after all", "too soon", "all in"]


def test_revert_is_refused_when_there_is_nothing_to_revert_or_the_targets_changed(route):
    with pytest.raises(weights.WeightsInvalid, match="no earlier weights change"):
        weights.revert_weights(route, reason="x", actor="alice")
    weights.apply_weights(route, {"stable": 100, "canary": 0}, reason="drop canary", actor="alice")
    RouteTarget.objects.filter(deployment__name="canary").delete()
    with pytest.raises(weights.WeightsInvalid) as rejected:
        weights.revert_weights(route, reason="x", actor="alice")
    assert "not a target" in rejected.value.errors["weights.canary"][0]


def test_note_split_change_records_only_real_changes(route):
    before = route.weights()
    weights.note_split_change(route, before, reason="", actor="alice")
    assert Route.objects.get().version == 2
    assert not AuditEvent.objects.filter(action="weights").exists()

    RouteTarget.objects.filter(deployment__name="canary").update(weight=20)
    RouteTarget.objects.filter(deployment__name="stable").update(weight=80)
    weights.note_split_change(route, before, reason="edited", actor="alice")
    assert AuditEvent.objects.get(action="weights").after == {"version": 3, "weights": {"canary": 20, "stable": 80}}


def test_check_weights_accepts_a_valid_split_of_a_new_route(route):
    assert weights.check_weights({"stable": 100}) == {}
    assert weights.check_weights({"stable": 0, "canary": 100}) == {}
    assert "weights.x" in weights.check_weights({"x": 100})
