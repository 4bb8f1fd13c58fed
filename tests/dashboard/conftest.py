"""Dashboard test helpers: WebSocket communicators signed in as a given user."""

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the address the socket is reached at


def session_cookie(user):
    """Return a Cookie header value for a fresh session of `user`."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def live_socket(user=None, origin=ORIGIN, host=HOST, scheme="ws"):
    """Return a communicator for /ws/live/ through the real ASGI application."""
    from dashboard.asgi import application

    headers = [header for header in (origin, host) if header]
    if user is not None:
        headers.append((b"cookie", (await sync_to_async(session_cookie)(user)).encode()))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    communicator.scope["scheme"] = scheme
    return communicator


@pytest.fixture
def channel_groups():
    """The in-memory channel layer's {group: {channel: expiry}} map, emptied first."""
    layer = get_channel_layer()
    layer.groups.clear()
    return layer.groups


@pytest.fixture
def seeded(db):
    """A provider with one key, deployments "stable" and "canary", route "chat" at 90/10,
    a minute of probe and traffic rollups, a probe result, and a weights audit entry."""
    from django.utils import timezone

    from probes import sketch
    from probes.models import HealthState, ProbeResult, ProbeTarget, Rollup, Source
    from routing.outcomes import Outcome
    from tests.factories import canary_world

    made = canary_world(models=("steady", "flaky"))
    provider, key, stable, canary, route = made.provider, made.key, made.stable, made.canary, made.route
    minute = timezone.now().replace(second=0, microsecond=0)
    latencies = sketch.new()
    for value in (40, 42, 45, 300):
        latencies.add(value)
    Rollup.objects.create(minute=minute, source=Source.PROBE, deployment=stable, count=4, ok=4,
                          latency=sketch.to_json(latencies))
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=stable, route=route, count=90, ok=90,
                          latency=sketch.to_json(latencies))
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=canary, route=route, count=10, ok=5,
                          errors={"server_error": 5}, latency=sketch.to_json(latencies))
    # Saving a deployment gives it a rotating probe target; mark the canary's down.
    target, _ = ProbeTarget.objects.update_or_create(
        deployment=canary, api_key=None, defaults={"health": HealthState.DOWN, "health_reason": "5 failures in a row"})
    ProbeResult.objects.create(target=target, deployment=canary, api_key=key, slot=1, started_at=timezone.now(),
                               outcome=Outcome.SERVER_ERROR, status_code=500, total_ms=51.0, error="HTTP 500")
    return {"provider": provider, "key": key, "stable": stable, "canary": canary, "route": route}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are created in almost every test here; the real hasher would dominate the run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
