"""What routing does once a transaction commits: the live pushes and the gateways' change notice.

The suite wraps each test in a transaction that never commits, so on-commit
callbacks would never run; these tests run them
(`django_capture_on_commit_callbacks(execute=True)`) and check what open
dashboards and gateway processes would hear. Sites tested elsewhere:
weights (tests/routing/test_weights.py), a base URL change
(test_endpoints.py), key state changes (tests/probes/test_rechecks.py),
health (tests/probes/test_health.py), probe results
(tests/probes/test_runner_live.py), alert delivery
(tests/dashboard/alerts/test_delivery.py), rollouts (rollouts/test_live.py).
"""

import time

import pytest

from dashboard import live
from routing.gateway import recorder, snapshot
from routing.models import ApiKey, CircuitState, DeploymentCircuit, Event, EventKind
from tests.factories import canary_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(monkeypatch):
    """Every live push, as (message type, payload), through the real live module."""
    sent = []
    monkeypatch.setattr(live, "_send", lambda kind, payload, group=live.GROUP_ALL: sent.append((kind, payload)))
    return sent


@pytest.fixture
def announced(monkeypatch):
    """Count the config-change notices sent to gateway processes."""
    count = []
    monkeypatch.setattr(snapshot, "announce_change", lambda: count.append(1))
    return count


def timeline(published):
    return [payload for kind, payload in published if kind == live.TIMELINE_EVENT]


def test_a_suspect_key_and_its_clearing_reach_open_dashboards(published, announced,
                                                             django_capture_on_commit_callbacks):
    key = canary_world().key
    with django_capture_on_commit_callbacks(execute=True):
        suspected = ApiKey.suspect(key.pk, "one 401", "system:gateway")
        cleared = ApiKey.clear_suspicion(key.pk, "a request succeeded", "system:gateway")
    assert timeline(published) == [suspected.payload(), cleared.payload()]
    assert [e["kind"] for e in timeline(published)] == [EventKind.KEY_SUSPECT, EventKind.KEY_ACTIVE]
    assert announced  # the gateways stop or resume treating the key as suspect


def test_a_probe_ending_a_cooldown_reaches_open_dashboards_and_the_gateways(published, announced,
                                                                            django_capture_on_commit_callbacks):
    world = canary_world()
    DeploymentCircuit.objects.create(deployment=world.canary, state=CircuitState.OPEN, reason="5 failures")
    with django_capture_on_commit_callbacks(execute=True):
        assert DeploymentCircuit.probe_succeeded(world.canary.pk)
    [pushed] = timeline(published)
    assert pushed == Event.objects.get(kind=EventKind.CIRCUIT_HALF_OPEN).payload()
    assert pushed["deployment"] == "canary"
    assert announced


def test_a_circuit_the_gateway_opened_reaches_open_dashboards_and_every_gateway(published, announced,
                                                                               django_capture_on_commit_callbacks):
    world = canary_world()
    with django_capture_on_commit_callbacks(execute=True):
        recorder._apply_circuit(("circuit", world.canary.pk, "5 consecutive failures", time.time(),
                                 CircuitState.OPEN))
    [pushed] = timeline(published)
    assert pushed == Event.objects.get(kind=EventKind.CIRCUIT_OPEN).payload()
    assert "5 consecutive failures" in pushed["message"]
    assert announced


def test_a_saved_config_change_is_announced_to_the_gateways_only_once_committed(announced,
                                                                               django_capture_on_commit_callbacks):
    world = canary_world()
    with django_capture_on_commit_callbacks(execute=False) as pending:
        world.canary.enabled = False
        world.canary.save()
    assert not announced and pending  # nothing before the commit
    for callback in pending:
        callback()
    assert announced
