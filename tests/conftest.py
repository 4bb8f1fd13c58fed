"""Shared fixtures: an admin, a read-only viewer, an outsider, API clients for
each, a gateway key, and helpers that require real services under CI=true."""

import os
import socket

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name, host, port):
    """Skip (locally) or fail (under CI=true) when a real service is missing."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it.")
    pytest.skip(message)


@pytest.fixture
def require_redis():
    require_service("Redis", "127.0.0.1", 6379)
    return os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def require_postgres():
    require_service("PostgreSQL", "127.0.0.1", 5432)


def _token_client(user):
    """An API client authenticated with a fresh (hashed, expiring) API token of `user`."""
    from routing.models import ApiToken

    client = APIClient()
    _, plaintext = ApiToken.objects.create(user, name="tests")
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client


@pytest.fixture
def admin_user(db):
    return User.objects.create_user("alice", "alice@example.com", "correct-horse-battery", is_staff=True,
                                    is_superuser=True)


@pytest.fixture
def viewer_user(db):
    user = User.objects.create_user("victor", "victor@example.com", "correct-horse-battery")
    user.groups.add(Group.objects.get_or_create(name=settings.VIEWER_GROUP)[0])
    return user


@pytest.fixture
def outsider_user(db):
    return User.objects.create_user("olga", "olga@example.com", "correct-horse-battery")


@pytest.fixture
def admin_api(admin_user):
    return _token_client(admin_user)


@pytest.fixture
def viewer_api(viewer_user):
    return _token_client(viewer_user)


@pytest.fixture
def outsider_api(outsider_user):
    return _token_client(outsider_user)


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture
def gateway_key(db):
    """A GatewayKey allowed on every route; `.plaintext` holds the bearer secret."""
    from routing.models import GatewayKey

    key = GatewayKey(name="test app")
    key.plaintext = key.generate()
    key.save()
    return key


# The API must behave the same on SQLite and PostgreSQL: these modules also
# run in the scaled pass of `make test` (scripts/run-scaled-tests.sh).
SCALED_MODULES = ("test_api", "test_weights")


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        if module.startswith(SCALED_MODULES) and item.path.parent.name in ("routing", "probes"):
            item.add_marker(pytest.mark.scaled)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hash test users' passwords with a cheap hasher: PBKDF2 costs ~0.3 s per user on 2 cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_local_cache():
    """Throttle counters live in the cache; the in-memory one outlives a test's database (user ids repeat)."""
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()


# --- the gateway and its simulator upstream, on loopback (helpers: tests/routing/gateway/helpers.py) ---


@pytest.fixture
def sim():
    """A simulator on loopback accepting any key; its built-in models plus "fast" ones."""
    from routing.simulator import Simulator, SimulatorServer

    with SimulatorServer(Simulator(seed=7)) as server:
        yield server


@pytest.fixture
def metrics_token(settings):
    """Configure the scrape token that `scrape` sends."""
    from tests.routing.gateway.helpers import METRICS_TOKEN

    settings.METRICS_TOKEN = METRICS_TOKEN
    return METRICS_TOKEN


@pytest.fixture
def serve_gateway():
    """Start gateways: serve_gateway(**GatewayConfig overrides) -> GatewayServer (stopped at teardown)."""
    from routing.gateway.app import Gateway, GatewayConfig
    from routing.gateway.serve import GatewayServer
    from tests.routing.gateway.helpers import FAST

    servers = []

    def start(rng=None, **overrides):
        config = GatewayConfig.from_settings(**{**FAST, **overrides})
        server = GatewayServer(Gateway(config, rng=rng)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def logged_sql(caplog):
    """Capture every log record at DEBUG, SQL statements with their parameters included (the secret-marker tests)."""
    import logging

    from django.db import connection

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django.db.backends")
    connection.force_debug_cursor = True
    yield caplog
    connection.force_debug_cursor = False
