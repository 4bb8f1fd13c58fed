"""A client that hangs up is the client's: the request is booked `client_closed` (a request-log row, no
breaker failure, no timeout in the deployment's rollups) and its upstream call ends at once. Under Daphne
(the embedded mode) as Daphne drives the app: the body, then `http.disconnect`, then a task cancel about
10 s later; and on the uvicorn gateway with a real socket the client closes."""

import asyncio
import socket
import time

import orjson
import pytest
from asgiref.sync import sync_to_async

from probes.models import Rollup
from routing.gateway.app import Gateway, GatewayConfig, mount
from routing.models import Deployment, RequestLog
from tests.routing.gateway.helpers import FAST, client_key, make_provider, make_route, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = "fault-silence"  # the simulator says nothing until the gateway's read timeout (10 s here)


@pytest.fixture
def silent_route(sim):
    def build():
        make_route("r", make_provider(sim, read_timeout=10.0), {"d": (SLOW, 100)})
        return client_key()

    return sync_to_async(build)


def chat_body(stream):
    return orjson.dumps({"model": "r", "messages": [{"role": "user", "content": "hi"}], "stream": stream})


def http_scope(key, body):
    headers = [(b"authorization", f"Bearer {key.plaintext}".encode()), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers,
            "query_string": b"", "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 5000)}


async def daphne_drives(app, key, stream, disconnect_after=None, cancel_after=3.0):
    """Run one request the way Daphne does: the body on its queue, `http.disconnect` when the client's
    connection is lost (after `disconnect_after` s), a cancel of the app's task when it outlives that
    (`cancel_after` s; Daphne waits 10 s). Return (seconds until the task ended, cancelled from outside,
    what it sent)."""
    body, queue, sent = chat_body(stream), asyncio.Queue(), []
    queue.put_nowait({"type": "http.request", "body": body, "more_body": False})

    async def send(message):
        sent.append(message)

    started = time.monotonic()
    task = asyncio.ensure_future(app(http_scope(key, body), queue.get, send))
    if disconnect_after is not None:
        asyncio.get_running_loop().call_later(disconnect_after, queue.put_nowait, {"type": "http.disconnect"})
    done, _ = await asyncio.wait({task}, timeout=cancel_after)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return time.monotonic() - started, not done, sent


@pytest.fixture
async def embedded():
    async def django_app(scope, receive, send):
        raise AssertionError("the gateway serves /v1/")

    app = mount(django_app, Gateway(GatewayConfig.from_settings(**{**FAST, "deadline_s": 30.0})))
    yield app
    await app.gateway.stop()


def booked(gateway):
    """Return (the request-log rows, the deployment's breaker failures in a row, its rollup errors) once flushed."""
    gateway.recorder.flush()
    deployment = Deployment.objects.get(name="d")
    breaker = gateway.breakers.by_deployment.get(deployment.pk)
    errors = {}
    for row in Rollup.objects.filter(deployment=deployment):
        errors.update(row.errors)
    rows = [(row.outcome, row.status, [t["outcome"] for t in row.tried]) for row in RequestLog.objects.all()]
    return rows, breaker.consecutive if breaker is not None else 0, errors


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream before its first token"])
async def test_under_daphne_a_client_that_hangs_up_is_booked_client_closed_at_once(sim, embedded, silent_route,
                                                                                  stream):
    key = await silent_route()
    seconds, cancelled, sent = await daphne_drives(embedded, key, stream, disconnect_after=0.2)
    assert not cancelled and seconds < 1.5  # the gateway noticed by itself; Daphne had nothing to cancel
    assert sent == []  # nobody is listening
    assert await sync_to_async(wait_until)(lambda: not sim.simulator.held, timeout=1.0)  # the upstream call ended
    rows, failures, errors = await sync_to_async(booked)(embedded.gateway)
    assert rows == [("client_closed", 499, ["client_closed"])]
    assert failures == 0 and "timeout" not in errors


async def test_under_daphne_a_cancel_that_is_not_the_deadline_is_the_clients(sim, embedded, silent_route):
    """Daphne cancels an app that outlived its client (or on shutdown): whatever the reason, not a timeout."""
    key = await silent_route()
    seconds, cancelled, _ = await daphne_drives(embedded, key, stream=False, cancel_after=0.5)
    assert cancelled
    rows, failures, errors = await sync_to_async(booked)(embedded.gateway)
    assert rows == [("client_closed", 499, ["client_closed"])]
    assert failures == 0 and "timeout" not in errors


async def test_the_gateways_own_deadline_is_still_the_deployments_timeout(sim, silent_route):
    app = mount(None, Gateway(GatewayConfig.from_settings(**{**FAST, "deadline_s": 0.5})))
    key = await silent_route()
    try:
        seconds, cancelled, sent = await daphne_drives(app, key, stream=False, cancel_after=3.0)
        assert not cancelled and sent[0]["status"] == 504
        rows, failures, errors = await sync_to_async(booked)(app.gateway)
    finally:
        await app.gateway.stop()
    assert rows == [("timeout", 504, ["timeout"])]
    assert failures == 1 and errors == {"timeout": 1}


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream before its first token"])
def test_on_uvicorn_a_client_that_closes_its_socket_is_booked_client_closed(sim, serve_gateway, stream):
    make_route("r", make_provider(sim, read_timeout=10.0), {"d": (SLOW, 100)})
    key = client_key()
    gateway = serve_gateway(deadline_s=30.0)
    body = chat_body(stream)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key.plaintext}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as client:
        client.sendall(head + body)
        assert wait_until(lambda: sim.simulator.held, timeout=2.0)  # the upstream call is under way
    left_at = time.monotonic()
    assert wait_until(lambda: not sim.simulator.held, timeout=2.0), "the upstream call is still open"
    assert time.monotonic() - left_at < 1.5  # not the 10 s of the upstream's read timeout
    rows, failures, errors = wait_until(lambda: (lambda b: b if b[0] else None)(booked(gateway.gateway)))
    assert rows == [("client_closed", 499, ["client_closed"])]
    assert failures == 0 and "timeout" not in errors
