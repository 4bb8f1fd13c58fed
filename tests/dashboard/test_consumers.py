"""The live WebSocket, driven through the real ASGI application."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from dashboard import live
from dashboard.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from routing.models import Event, EventKind
from tests.dashboard.conftest import live_socket

pytestmark = pytest.mark.django_db(transaction=True)

PROBE = {"deployment": "gpt-main", "api_key": "key-1", "outcome": "ok", "latency_ms": 41.5,
         "ttft_ms": 20.0, "tps": 180.0, "at": "2025-01-01T12:00:00+00:00"}
SENT = {"target": None, "model_swapped": False, "recorded_at": None, **PROBE}  # the payload with its defaults


def probe(**changes):
    return live.ProbeResult(**{**PROBE, **changes})


def traffic(count, deployment="gpt-main"):
    return live.TrafficPoint(deployment=deployment, route="chat", minute="m1", count=count)


async def connected(user):
    socket = await live_socket(user)
    ok, code = await socket.connect()
    assert ok, f"refused with {code}"
    return socket


async def messages_of(socket, timeout=1):
    frame = await socket.receive_json_from(timeout=timeout)
    assert frame["type"] == "batch"
    return frame["messages"]


async def test_staff_receive_probe_results_published_by_the_live_module(admin_user):
    socket = await connected(admin_user)
    try:
        await sync_to_async(live.probe_result)(probe())
        assert await messages_of(socket) == [{"type": "probe.result", "payload": SENT}]
    finally:
        await socket.disconnect()


async def test_viewers_receive_every_message_type(viewer_user):
    socket = await connected(viewer_user)
    try:
        await sync_to_async(live.health_changed)(live.HealthChanged(deployment="gpt-main", state="down", reason="5xx"))
        await sync_to_async(live.timeline_event)(Event(kind=EventKind.HEALTH, message="gpt-main is down",
                                                       created_at=timezone.now()))
        await sync_to_async(live.traffic_point)(traffic(3))
        received = await messages_of(socket)
        assert [m["type"] for m in received] == ["health.changed", "timeline.event", "traffic.point"]
    finally:
        await socket.disconnect()


async def test_a_weights_change_is_sent_at_once_without_waiting_for_the_batch(admin_user):
    socket = await connected(admin_user)
    try:
        change = {"route": "chat", "version": 4, "weights": {"a": 75, "b": 25}, "actor": "alice", "reason": "canary",
                  "at": None}
        started = asyncio.get_running_loop().time()
        await sync_to_async(live.weights_changed)(live.WeightsChanged(**change))
        assert await messages_of(socket, timeout=0.2) == [{"type": "weights.changed", "payload": change}]
        assert asyncio.get_running_loop().time() - started < 0.2
    finally:
        await socket.disconnect()


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
async def test_it_refuses_anonymous_users_and_users_without_a_role(who, outsider_user):
    user = None if who == "anonymous" else outsider_user
    socket = await live_socket(user)
    ok, code = await socket.connect()
    assert not ok
    assert code == (CLOSE_UNAUTHENTICATED if who == "anonymous" else CLOSE_FORBIDDEN)
    await socket.disconnect()


async def test_it_refuses_a_foreign_origin(admin_user):
    socket = await live_socket(admin_user, origin=(b"origin", b"https://evil.example.com"))
    ok, _ = await socket.connect()
    assert not ok
    await socket.disconnect()


async def test_a_refused_socket_joins_no_group_and_receives_nothing(outsider_user, channel_groups):
    socket = await live_socket(outsider_user)
    ok, _ = await socket.connect()
    assert not ok
    await sync_to_async(live.probe_result)(probe())
    assert await socket.receive_nothing(timeout=0.4)
    assert channel_groups == {}
    await socket.disconnect()


async def test_nothing_arrives_when_nothing_was_published(viewer_user):
    socket = await connected(viewer_user)
    try:
        assert await socket.receive_nothing(timeout=0.5)
    finally:
        await socket.disconnect()


async def test_groups_are_empty_after_disconnect(admin_user, viewer_user, channel_groups):
    first, second = await connected(admin_user), await connected(viewer_user)
    assert len(channel_groups[live.GROUP_ALL]) == 2
    assert set(channel_groups) == {live.GROUP_ALL, live.user_group(admin_user.pk), live.user_group(viewer_user.pk)}
    await first.disconnect()
    await second.disconnect()
    assert channel_groups == {}


async def test_logging_out_closes_that_users_socket_only(admin_user, viewer_user):
    admin_socket, viewer_socket = await connected(admin_user), await connected(viewer_user)
    try:
        browser = Client()
        await sync_to_async(browser.force_login)(admin_user)
        await sync_to_async(browser.post)("/logout/")
        closed = await admin_socket.receive_output(timeout=1)
        assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
        assert await viewer_socket.receive_nothing(timeout=0.3)
    finally:
        await admin_socket.disconnect()
        await viewer_socket.disconnect()


async def test_a_burst_of_100_probe_points_arrives_in_a_few_batches(admin_user):
    socket = await connected(admin_user)
    try:
        for n in range(100):
            await sync_to_async(live.probe_result)(probe(latency_ms=n))
        frames = []
        while not await socket.receive_nothing(timeout=0.6):
            frames.append(await socket.receive_json_from())
        latencies = [m["payload"]["latency_ms"] for f in frames for m in f["messages"]]
        assert latencies == list(range(100))
        assert 1 <= len(frames) <= 5
    finally:
        await socket.disconnect()


async def test_repeated_traffic_figures_for_one_minute_are_coalesced_to_the_latest(admin_user):
    socket = await connected(admin_user)
    try:
        for count in (1, 2, 3):
            await sync_to_async(live.traffic_point)(traffic(count, "a"))
        messages = await messages_of(socket)
        assert [m["payload"]["count"] for m in messages] == [3]
    finally:
        await socket.disconnect()


async def test_publishing_from_async_code_on_the_server_loop_reaches_sockets(admin_user):
    socket = await connected(admin_user)
    try:
        live.probe_result(probe())  # e.g. the gateway's flusher, running on the server's loop
        assert await messages_of(socket) == [{"type": "probe.result", "payload": SENT}]
    finally:
        await socket.disconnect()
