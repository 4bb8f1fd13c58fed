"""Open pages hear the alert counts change (batched as every live message), and nothing when nothing changed."""

from unittest import mock

import pytest
from asgiref.sync import sync_to_async

from dashboard.alerts import engine
from tests.dashboard.conftest import live_socket

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db(transaction=True)


def down_world():
    from tests.factories import canary_world

    world = canary_world()
    make_rule()
    set_health(world.canary, "down")


async def test_a_firing_alert_reaches_open_pages_as_an_alerts_message(viewer_user):
    await sync_to_async(down_world)()
    engine._last_published.clear()
    socket = await live_socket(viewer_user)
    ok, _ = await socket.connect()
    assert ok
    try:
        with mock.patch("dashboard.alerts.delivery.enqueue"):
            await sync_to_async(engine.tick)()
            frame = await socket.receive_json_from(timeout=2)
            [changed] = [m["payload"] for m in frame["messages"] if m["type"] == "alerts.changed"]
            assert (changed["firing"], changed["pending"]) == (1, 0)
            await sync_to_async(engine.tick)()  # the same counts: nothing to tell
            assert await socket.receive_nothing(timeout=0.5)
    finally:
        await socket.disconnect()
