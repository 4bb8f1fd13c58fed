"""Services of a test's own for outage tests: a Redis server on a free loopback port that the test may stop and
start again, and a throwaway database on the PostgreSQL server (reached through tests/sockets.Relay to take it
away without stopping the server everyone shares).

`redis-server` or PostgreSQL missing skips the test locally and fails it under CI=true, like the shared
services (tests/conftest.py).
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import IN_CI, require_service

POSTGRES_URL = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
POSTGRES_PORT = urlsplit(POSTGRES_URL).port or 5432


def _postgres_admin(statement):
    import psycopg

    with psycopg.connect(urlunsplit(urlsplit(POSTGRES_URL)._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(statement)


@contextmanager
def throwaway_database(prefix, create=True):
    """Yield the URL of a fresh database on the PostgreSQL server (`create=False`: only its name is reserved,
    something else creates it); dropped at the end."""
    require_service("PostgreSQL", "127.0.0.1", POSTGRES_PORT)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    if create:
        _postgres_admin(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}"))
    finally:
        _postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def via_port(url, port):
    """`url` with its host and port replaced by 127.0.0.1:`port` (a relay's), user and password kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


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
