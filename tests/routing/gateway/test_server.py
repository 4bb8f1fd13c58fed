"""The standalone gateway's server under abuse (uvicorn with serve.LimitedHttpToolsProtocol): huge headers,
huge uploads, slow or idle connections, and long streams that must not be cut."""

import time

import httpx
import pytest

from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat
from tests.sockets import connect, response, send_until_refused

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def gateway(sim, serve_gateway, settings):
    settings.SERVER_HEADER_TIMEOUT_S = 1.0
    sim.simulator.configure("slowpoke", tokens_per_s=10, output_tokens=25)  # a 2.5 s stream
    make_route("chat", make_provider(sim, read_timeout=5.0), {"sim-fast": ("fast", 90), "sim-slow": ("slowpoke", 10)})
    key = client_key()
    return serve_gateway(), key


def _connect(server):
    return connect(server.port)


def test_a_huge_header_gets_431(gateway):
    server, key = gateway
    sock = _connect(server)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: "
    sent = send_until_refused(sock, head, 8 * 1024 * 1024, b"a" * 4096)
    answer = response(sock)
    assert sent < 8 * 1024 * 1024, "the server kept reading an 8 MB header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert post_chat(server, key, "chat").status_code == 200


def test_a_header_just_under_the_limit_is_served(gateway, settings):
    server, key = gateway
    padding = "a" * (settings.SERVER_MAX_HEADER_BYTES - 1024)
    assert post_chat(server, key, "chat", headers={"X-Padding": padding}).status_code == 200


def test_a_300_mb_upload_is_refused_before_it_is_read(gateway):
    server, key = gateway
    sock = _connect(server)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (key.plaintext.encode(), 300 * 1024 * 1024))
    sent = send_until_refused(sock, head, 300 * 1024 * 1024, b"x" * 65536)
    answer = response(sock)
    assert answer.startswith(b"HTTP/1.1 413") and answer.count(b"HTTP/1.1") == 1
    assert sent < 300 * 1024 * 1024


def test_headers_that_drip_in_too_slowly_are_cut_off(gateway):
    server, _ = gateway
    sock = _connect(server)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < 5:
            sock.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.3)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert response(sock) == b"" and time.monotonic() - started < 3


def test_a_stream_longer_than_the_header_timeout_is_not_cut(gateway):
    server, key = gateway
    with httpx.Client(timeout=10) as client:  # one keep-alive connection for both requests
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        headers = {"Authorization": f"Bearer {key.plaintext}", "x-session-id": "pick-slow"}
        for _ in range(20):  # sticky sessions pick one target per id; find one that lands on the slow one
            response = client.post(f"{server.base_url}/chat/completions", json=body, headers=headers)
            if response.headers["x-weathervane-deployment"] == "sim-slow":
                break
            headers["x-session-id"] += "x"
        assert response.headers["x-weathervane-deployment"] == "sim-slow"
        assert response.text.rstrip().endswith("data: [DONE]")
        assert client.get(f"{server.base_url}/models", headers=headers).status_code == 200


def test_hundreds_of_idle_connections_do_not_stop_a_normal_request(gateway):
    server, key = gateway
    idle = [_connect(server) for _ in range(300)]
    try:
        started = time.monotonic()
        assert post_chat(server, key, "chat").status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()
