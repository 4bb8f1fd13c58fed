"""The live WebSocket, driven through the real ASGI application."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from django.utils import timezone

from dashboard import live
from dashboard.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, LiveConsumer
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
                  "at": None, "fallbacks": ["b"]}
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


# --- Rights, origins and group expiry -------------------------------------------


async def closed_with(socket, timeout=1):
    output = await socket.receive_output(timeout=timeout)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def test_deactivating_a_user_closes_their_open_socket(viewer_user):
    socket = await connected(viewer_user)
    try:
        viewer_user.is_active = False
        await sync_to_async(viewer_user.save)()
        assert await closed_with(socket) == CLOSE_UNAUTHENTICATED
    finally:
        await socket.disconnect()


async def test_losing_the_viewer_role_closes_the_socket_and_nothing_more_arrives(viewer_user):
    from django.contrib.auth.models import Group

    socket = await connected(viewer_user)
    try:
        group = await sync_to_async(Group.objects.get)(name=settings.VIEWER_GROUP)
        await sync_to_async(viewer_user.groups.remove)(group)
        assert await closed_with(socket) == CLOSE_FORBIDDEN
        await sync_to_async(live.probe_result)(probe())
        assert await socket.receive_nothing(timeout=0.4)
    finally:
        await socket.disconnect()


async def test_a_right_removed_without_signals_is_noticed_by_the_periodic_recheck(viewer_user, monkeypatch):
    from django.contrib.auth.models import User

    monkeypatch.setattr(LiveConsumer, "RIGHTS_RECHECK_S", 0.3)
    socket = await connected(viewer_user)
    try:
        await sync_to_async(User.objects.filter(pk=viewer_user.pk).update)(is_active=False)  # no post_save
        assert await closed_with(socket, timeout=2) == CLOSE_UNAUTHENTICATED
    finally:
        await socket.disconnect()


async def test_a_password_change_closes_the_sockets_of_the_sessions_it_ended(viewer_user):
    socket = await connected(viewer_user)
    try:
        viewer_user.set_password("another-horse-battery-staple")
        await sync_to_async(viewer_user.save)()  # e.g. an admin resetting it, or the user on another device
        assert await closed_with(socket) == CLOSE_UNAUTHENTICATED
        await sync_to_async(live.probe_result)(probe())
        assert await socket.receive_nothing(timeout=0.3)
    finally:
        await socket.disconnect()


async def test_deleted_sessions_are_noticed_by_the_periodic_recheck(viewer_user, monkeypatch):
    from django.contrib.sessions.models import Session

    monkeypatch.setattr(LiveConsumer, "RIGHTS_RECHECK_S", 0.3)
    socket = await connected(viewer_user)
    try:
        await sync_to_async(Session.objects.all().delete)()  # e.g. `clearsessions`, or an admin ending them all
        assert await closed_with(socket, timeout=2) == CLOSE_UNAUTHENTICATED
    finally:
        await socket.disconnect()


async def test_a_user_who_keeps_their_rights_keeps_receiving_after_the_recheck(viewer_user, monkeypatch):
    monkeypatch.setattr(LiveConsumer, "RIGHTS_RECHECK_S", 0.2)
    socket = await connected(viewer_user)
    try:
        await asyncio.sleep(0.5)
        await sync_to_async(live.probe_result)(probe())
        assert await messages_of(socket) == [{"type": "probe.result", "payload": SENT}]
    finally:
        await socket.disconnect()


@pytest.mark.parametrize("origin, host, scheme", [
    (b"http://127.0.0.1:9999", b"127.0.0.1:8000", "ws"),  # another port on the same host
    (b"http://127.0.0.1:8000", b"127.0.0.1:8000", "wss"),  # a plain-http page talking to a TLS socket
    (b"https://127.0.0.1", b"127.0.0.1:8000", "ws"),
    (b"null", b"127.0.0.1:8000", "ws"),
    (b"http://127.0.0.1:8000", b"evil.example.com:8000", "ws"),  # a Host not in ALLOWED_HOSTS
])
async def test_it_refuses_an_origin_whose_scheme_or_port_differs(admin_user, origin, host, scheme):
    socket = await live_socket(admin_user, origin=(b"origin", origin), host=(b"host", host), scheme=scheme)
    ok, _ = await socket.connect()
    assert not ok
    await socket.disconnect()


@pytest.mark.parametrize("origin, host, scheme", [
    (b"https://localhost", b"localhost:443", "wss"),
    (b"http://LOCALHOST:8000", b"localhost:8000", "ws"),
    (b"http://[::1]:8000", b"[::1]:8000", "ws"),
])
async def test_it_accepts_the_sockets_own_origin(admin_user, origin, host, scheme):
    socket = await live_socket(admin_user, origin=(b"origin", origin), host=(b"host", host), scheme=scheme)
    ok, code = await socket.connect()
    assert ok, code
    await socket.disconnect()


async def test_it_accepts_an_origin_listed_in_csrf_trusted_origins(admin_user, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://dash.example.com:8443"]
    socket = await live_socket(admin_user, origin=(b"origin", b"https://dash.example.com:8443"))
    ok, code = await socket.connect()
    assert ok, code
    await socket.disconnect()


async def test_a_socket_keeps_receiving_after_its_group_membership_would_have_expired(admin_user, monkeypatch):
    from channels.layers import get_channel_layer

    monkeypatch.setattr(get_channel_layer(), "group_expiry", 1)
    socket = await connected(admin_user)
    try:
        await asyncio.sleep(2.5)
        await sync_to_async(live.probe_result)(probe())
        assert await messages_of(socket) == [{"type": "probe.result", "payload": SENT}]
    finally:
        await socket.disconnect()


async def test_a_late_rejoin_tells_the_page_to_backfill(admin_user, monkeypatch):
    from channels.layers import get_channel_layer

    monkeypatch.setattr(get_channel_layer(), "group_expiry", 1)
    monkeypatch.setattr(LiveConsumer, "REJOIN_SHARE", 1.5)  # as if the rejoin was held up past the expiry
    socket = await connected(admin_user)
    try:
        frame = await socket.receive_json_from(timeout=3)
        assert frame == {"type": "batch", "messages": [], "dropped": 1}
        await sync_to_async(live.probe_result)(probe())
        assert await messages_of(socket) == [{"type": "probe.result", "payload": SENT}]
    finally:
        await socket.disconnect()
