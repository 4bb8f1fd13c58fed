"""Open dashboards hear every rollout transition: a typed rollout.changed message and its timeline event."""

import pytest
from asgiref.sync import sync_to_async

from routing.rollouts.controller import gate
from tests.dashboard.conftest import live_socket

from .helpers import draft, world

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_gate_reaches_open_dashboards_as_a_rollout_message_and_a_timeline_event(viewer_user):
    rollout = await sync_to_async(lambda: draft(world()))()
    socket = await live_socket(viewer_user)
    ok, _ = await socket.connect()
    assert ok
    try:
        assert await socket.receive_nothing(timeout=0.3)
        await sync_to_async(gate)(rollout.pk, "start", reason="ship it", actor="alice")
        frame = await socket.receive_json_from(timeout=2)
        by_type = {m["type"]: m["payload"] for m in frame["messages"]}
        changed = by_type["rollout.changed"]
        assert (changed["rollout"], changed["route"], changed["canary"], changed["state"], changed["actor"]) == (
            rollout.pk, "chat", "canary", "preflight", "alice")
        assert changed["reason"] == "ship it"
        assert by_type["timeline.event"]["kind"] == "rollout"
        assert "Draft → Preflight: ship it" in by_type["timeline.event"]["message"]
    finally:
        await socket.disconnect()
