"""A Redis server of a test's own, on a free loopback port, that the test may stop and start again.

Tests of outages cannot stop the Redis that other tests (and other engineers' suites) share; this one
belongs to the test. `redis-server` missing skips the test locally and fails it under CI=true, like the
shared services (tests/conftest.py).
"""

import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import IN_CI


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_redis_server():
    """Return the path of redis-server; skip (locally) or fail (CI=true) without it."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI=true requires it.")
        pytest.skip(message)
    return path


class RedisServer:
    """`redis-server` on a fixed free port, without persistence: `stop()` is an outage, `start()` its end."""

    def __init__(self, directory):
        self.binary = require_redis_server()
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self):
        """Stop the server (SIGTERM, as `systemctl stop` does): clients see their connections close."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None
