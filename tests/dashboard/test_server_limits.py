"""The control plane's server under abuse (`manage.py serve`, Daphne with dashboard.server_limits):
huge headers, bodies over the limit refused before they are buffered, slow or idle connections."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sockets import connect, response, send_until_refused

ROOT = Path(__file__).resolve().parents[2]
BODY_LIMIT = 1024 * 1024  # WEATHERVANE_GATEWAY_MAX_BODY in this test: the largest body any application takes
HEADER_TIMEOUT = 2

pytestmark = pytest.mark.timeout(120)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path_factory.mktemp("serve")), "DEBUG": "true",
            "WEATHERVANE_GATEWAY_MAX_BODY": str(BODY_LIMIT), "WEATHERVANE_HEADER_TIMEOUT": str(HEADER_TIMEOUT)}
    command = [sys.executable, "manage.py", "serve", "--no-simulator", "--no-probes", "--port", str(port)]
    process = subprocess.Popen(command,
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _get(port, timeout=30) == 200, "serve did not answer within 30 s"
        yield port
    finally:
        process.terminate()
        process.wait(15)


def _get(port, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=5).status
        except OSError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


def _connect(port):
    return connect(port, send_buffer=64 * 1024)


def test_a_huge_header_is_refused(server):
    sock = _connect(server)
    sent = send_until_refused(sock, b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ", 8 * 1024 * 1024,
                               b"a" * 4096)
    answer = response(sock)
    assert sent < 8 * 1024 * 1024, "the server kept reading an 8 MB header"
    # the 400 may be lost to the reset of a peer still sending
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400")
    assert _get(server) == 200


def test_a_300_mb_upload_is_refused_before_it_is_buffered(server):
    sock = _connect(server)
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (300 * 1024 * 1024))
    sent = send_until_refused(sock, head, 300 * 1024 * 1024)
    answer = response(sock)
    assert answer.startswith(b"HTTP/1.1 413") and b"larger than 1048576 bytes" in answer
    assert sent < 300 * 1024 * 1024  # the server closed long before: nothing near 300 MB was taken in


def test_a_chunked_upload_over_the_limit_is_refused_as_it_streams(server):
    sock = _connect(server)
    sock.sendall(b"POST /api/v1/providers/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    try:
        for _ in range(BODY_LIMIT // 0x10000 + 4):
            sock.sendall(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert response(sock).startswith(b"HTTP/1.1 413")


def test_a_body_within_the_limit_reaches_the_application(server):
    body = b'{"model": "x", "messages": []}'
    request = urllib.request.Request(f"http://127.0.0.1:{server}/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=10)
    assert answered.value.code == 401  # the gateway's own answer: no key


def test_headers_that_drip_in_too_slowly_are_cut_off(server):
    sock = _connect(server)
    sock.sendall(b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    try:
        while time.monotonic() - started < HEADER_TIMEOUT + 5:
            sock.sendall(b"X-Slow: 1\r\n")  # one header a second keeps the idle timer happy, not the deadline
            time.sleep(1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert response(sock) == b""
    assert time.monotonic() - started < HEADER_TIMEOUT + 3


def test_hundreds_of_idle_connections_do_not_stop_a_normal_request(server):
    idle = [_connect(server) for _ in range(300)]
    try:
        started = time.monotonic()
        assert _get(server, timeout=5) == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in idle:
            sock.close()
