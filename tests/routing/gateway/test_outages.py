"""Outages the gateway rides out: Redis stopped for real (a redis-server of the test's own) and a database that
stops answering. The gateway stays ready and keeps serving, names the dependency as degraded in /readyz and
/metrics, and logs each outage once when it starts and once when it ends. The same as the scaled mode runs the
gateway: test_outages_scaled.py."""

import logging
import time

import httpx
import pytest
from django.db import OperationalError

from routing.gateway import snapshot
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until
from tests.services import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)


def ready(gateway):
    answer = httpx.get(gateway.base_url.removesuffix("/v1") + "/readyz")
    return answer.status_code, answer.json()


def dependency_up(gateway, name):
    line = f'weathervane_gateway_dependency_up{{dependency="{name}"}} '
    return next(float(row.split()[-1]) for row in scrape(gateway).text.splitlines() if row.startswith(line))


def outage_lines(caplog, dependency):
    """Return ([lines that began an outage of `dependency`], [lines that ended one]) from the snapshot logger."""
    lines = [r.getMessage() for r in caplog.records if r.name == snapshot.__name__ and r.message.startswith(dependency)]
    return [m for m in lines if "is unavailable to" in m], [m for m in lines if "again (unavailable for" in m]


def test_a_stopped_redis_leaves_the_gateway_ready_and_serving_and_is_logged_once(sim, serve_gateway, metrics_token,
                                                                                tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=snapshot.__name__)
    make_route("r", make_provider(sim), {"d": ("fast", 100)})
    key = client_key()
    with RedisServer(tmp_path) as redis:
        gateway = serve_gateway(redis_url=redis.url)
        assert wait_until(lambda: ready(gateway) == (200, {"status": "ready"}), timeout=10)
        assert dependency_up(gateway, "redis") == 1

        redis.stop()
        assert wait_until(lambda: ready(gateway) == (200, {"status": "ready", "degraded": ["redis"]}), timeout=10)
        assert [post_chat(gateway, key, "r").status_code for _ in range(5)] == [200] * 5
        assert dependency_up(gateway, "redis") == 0
        time.sleep(3)  # the change-notice listener retries every second meanwhile
        assert ready(gateway) == (200, {"status": "ready", "degraded": ["redis"]})
        started, ended = outage_lines(caplog, "Redis")
        assert len(started) == 1 and not ended, started

        redis.start()
        assert wait_until(lambda: ready(gateway) == (200, {"status": "ready"}), timeout=10)
        assert dependency_up(gateway, "redis") == 1
        assert post_chat(gateway, key, "r").status_code == 200
        started, ended = outage_lines(caplog, "Redis")
        assert len(started) == 1 and len(ended) == 1, (started, ended)
        assert not any(r.exc_info for r in caplog.records if r.name == snapshot.__name__)


def test_a_database_outage_is_logged_once_when_it_starts_and_once_when_it_ends(sim, serve_gateway, monkeypatch,
                                                                              caplog):
    caplog.set_level(logging.WARNING, logger=snapshot.__name__)
    make_route("r", make_provider(sim), {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway()  # polls the database every 0.2 s

    def stopped():
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused\n\tIs it up?')

    monkeypatch.setattr(snapshot, "fingerprint", stopped)
    time.sleep(2)  # about ten failed polls
    assert post_chat(gateway, key, "r").status_code == 200  # served from the last snapshot
    started, ended = outage_lines(caplog, "The database")
    assert len(started) == 1 and not ended, started
    assert "OperationalError" in started[0] and "Connection refused" in started[0]
    assert "Is it up?" not in started[0]  # one line, not psycopg's hints

    monkeypatch.undo()
    assert wait_until(lambda: outage_lines(caplog, "The database")[1], timeout=5)
    time.sleep(0.5)
    started, ended = outage_lines(caplog, "The database")
    assert len(started) == 1 and len(ended) == 1, (started, ended)
    assert not any(r.exc_info for r in caplog.records if r.name == snapshot.__name__)

