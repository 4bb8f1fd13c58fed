"""Alert tests: a small world (provider "sim", deployments "stable" and "canary", route "chat"), a fake clock,
a catch-all policy with one channel, and the Messages the engine hands to delivery."""

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest

from dashboard.alerts.models import AlertRule, Channel, ChannelKind, NotificationPolicy
from tests.factories import canary_world

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start=T0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture(autouse=True)
def fresh_sketch_cache():
    """Test databases roll back and reuse row ids: start each test without the TTFT sketches of another."""
    from dashboard.alerts import sources

    sources._ttft_cache.clear()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def world(db):
    return canary_world()


@pytest.fixture
def channel(db):
    channel = Channel(name="ops webhook", kind=ChannelKind.WEBHOOK)
    channel.set_target("https://hooks.example.test/very-secret-token-123")
    channel.save()
    return channel


@pytest.fixture
def policy(channel):
    policy = NotificationPolicy.objects.create(name="everything", group_by=["alertname", "provider"],
                                               group_wait_s=30, group_interval_s=300, repeat_interval_s=3600)
    policy.channels.add(channel)
    return policy


@pytest.fixture
def sent():
    """The (Message, channel ids) pairs handed to delivery, in order."""
    calls = []
    with mock.patch("dashboard.alerts.delivery.enqueue", side_effect=lambda m, ids: calls.append((m, list(ids)))):
        yield calls


def make_rule(name="deployment down", kind="deployment_health", params=None, for_s=0, severity="critical",
              labels=None):
    return AlertRule.objects.create(name=name, kind=kind, params=params if params is not None else {"states": ["down"]},
                                    for_s=for_s, severity=severity, labels=labels or {})


def set_health(deployment, state, reason="3 consecutive failures", since=None):
    """Set the deployment's probe verdict; `since`: when the probes reached it (as probes.health records it)."""
    from probes.models import ProbeTarget

    extra = {"health_since": since} if since is not None else {}
    ProbeTarget.objects.filter(deployment=deployment).update(health=state, health_reason=reason, **extra)
