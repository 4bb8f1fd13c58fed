"""/livez, /readyz and /health on both servers: unauthenticated, cheap, naming what is missing, and ready
through the outages a loaded snapshot rides out (naming them degraded)."""

import time

import httpx
import pytest
from cryptography.fernet import Fernet

from routing.gateway.app import Gateway, GatewayConfig, mount
from tests.dashboard.test_settings import free_port, get_when_up, serving, stop
from tests.routing.gateway.helpers import FAST

CLOSED = f"127.0.0.1:{free_port()}"  # nothing listens there: a stopped server
STOPPED_DATABASE = {"DATABASE_URL": f"postgres://postgres@{CLOSED}/weathervane",
                    "WEATHERVANE_FERNET_KEYS": Fernet.generate_key().decode()}


@pytest.mark.django_db(transaction=True)
def test_a_running_gateway_is_alive_and_ready_without_credentials(serve_gateway):  # noqa: F811
    root = serve_gateway().base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/livez").json() == {"status": "alive"}
    for path in ("/readyz", "/health"):
        ready = httpx.get(root + path)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert ready.headers["cache-control"] == "no-store"
    assert httpx.head(f"{root}/health").status_code == 200
    refused = httpx.post(f"{root}/readyz")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


@pytest.mark.django_db(transaction=True)
def test_a_database_that_stops_answering_leaves_a_ready_gateway_ready_and_degraded(serve_gateway, monkeypatch,
                                                                                 metrics_token):
    from django.db import OperationalError

    from routing.gateway import snapshot
    from tests.routing.gateway.helpers import scrape

    gateway = serve_gateway()
    root = gateway.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/readyz").json() == {"status": "ready"}
    assert 'weathervane_gateway_dependency_up{dependency="database"} 1.0' in scrape(gateway).text

    def stopped():
        raise OperationalError("connection refused")

    monkeypatch.setattr(snapshot, "fingerprint", stopped)
    deadline = time.monotonic() + 10
    while "degraded" not in httpx.get(f"{root}/readyz").json() and time.monotonic() < deadline:
        time.sleep(0.2)
    ready = httpx.get(f"{root}/readyz")
    # The last snapshot is still served: a load balancer must keep sending traffic here.
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "degraded": ["database"]})
    assert 'weathervane_gateway_dependency_up{dependency="database"} 0.0' in scrape(gateway).text
    assert httpx.get(f"{root}/livez").status_code == 200
    monkeypatch.undo()  # the database answers again: no longer degraded
    deadline = time.monotonic() + 10
    while "degraded" in httpx.get(f"{root}/readyz").json() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{root}/readyz").json() == {"status": "ready"}


@pytest.mark.django_db(transaction=True)
async def test_the_embedded_process_answers_health_before_django_sees_it():
    async def django_app(scope, receive, send):  # Django would redirect to HTTPS or check the host
        await send({"type": "http.response.start", "status": 301, "headers": [(b"location", b"https://x/")]})
        await send({"type": "http.response.body", "body": b""})

    app = mount(django_app, Gateway(GatewayConfig.from_settings(**FAST)))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://10.0.0.7:8000") as client:
            assert (await client.get("/livez")).status_code == 200
            assert (await client.get("/health")).json() == {"status": "ready"}  # the first call waits for the snapshot
            assert (await client.get("/login/")).status_code == 301
    finally:
        await app.gateway.stop()


def test_the_gateway_with_a_stopped_database_and_redis_is_alive_but_not_ready(tmp_path):
    port = free_port()
    server = serving(tmp_path, ["gateway", "--log-level", "warning"], port, **STOPPED_DATABASE, REDIS_URL=f"redis://{CLOSED}/0")
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/livez").status_code == 200
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not ready", "missing": ["config snapshot"],
                                "degraded": ["database", "redis"]}
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 503
    finally:
        log = stop(server)
    assert STOPPED_DATABASE["WEATHERVANE_FERNET_KEYS"] not in ready.text + log


def test_the_control_plane_over_plain_http_with_a_stopped_database_says_so_instead_of_redirecting(tmp_path):
    port = free_port()
    server = serving(tmp_path, ["serve", "--no-simulator", "--no-probes"], port, DEBUG="false", **STOPPED_DATABASE)
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/livez").json() == {"status": "alive"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert (ready.status_code, ready.json()["missing"]) == (503, ["config snapshot"])
        assert ready.json()["degraded"] == ["database"]
        assert httpx.get(f"http://127.0.0.1:{port}/login/").status_code == 301  # pages still go to HTTPS
    finally:
        stop(server)
