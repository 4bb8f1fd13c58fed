"""The control plane while Redis hangs or refuses: a config write through the API (throttle cache, config-change
notice, live publish: three Redis uses on one request) still answers promptly and does its work."""

import logging
import time

import pytest

from routing.models import Route
from tests.factories import canary_world
from tests.sockets import SilentServer, closed_port

pytestmark = pytest.mark.django_db


def scaled_mode_at(settings, url):
    """Point every Redis use of the control plane at `url`, as REDIS_URL does."""
    settings.REDIS_URL = url
    settings.CACHES = {"default": {"BACKEND": "dashboard.cache.RedisCacheWithFallback", "LOCATION": url}}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [url]}}}


@pytest.fixture
def fresh_outages(monkeypatch):
    """Each test meets Redis trouble for the first time (the outages are per process)."""
    from dashboard import cache, live, redis_guard
    from routing.gateway import snapshot

    monkeypatch.setattr(cache, "_outages", {})
    monkeypatch.setattr(live, "_outage", redis_guard.Outage("live dashboard updates"))
    monkeypatch.setattr(snapshot, "_notice_outage", redis_guard.Outage("config-change notices"))
    monkeypatch.setattr(snapshot, "_publisher", {})


def move_split(admin_api, django_capture_on_commit_callbacks, reason):
    """PUT new weights, running the on-commit work (notice, live publish) as a real commit would;
    return (response, seconds it took)."""
    started = time.perf_counter()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.put("/api/v1/routes/chat/weights",
                                 {"weights": {"stable": 50, "canary": 50}, "reason": reason}, format="json")
    return response, time.perf_counter() - started


@pytest.mark.parametrize("trouble", ["hangs", "refuses"])
def test_a_weights_write_answers_promptly_when_redis_is_in_trouble(trouble, settings, admin_api, fresh_outages,
                                                                   django_capture_on_commit_callbacks, caplog):
    caplog.set_level(logging.WARNING, logger="dashboard.redis_guard")
    canary_world()
    with SilentServer() as redis:
        url = redis.url if trouble == "hangs" else f"redis://127.0.0.1:{closed_port()}/0"
        scaled_mode_at(settings, url)
        response, seconds = move_split(admin_api, django_capture_on_commit_callbacks, "canary looks fine")
        again, seconds_again = move_split(admin_api, django_capture_on_commit_callbacks, "once more")
    assert response.status_code == 200, response.content
    assert Route.objects.get(name="chat").weights() == {"stable": 50, "canary": 50}
    # Three Redis uses, each bounded at about 0.1 s; with redis-py's defaults the throttle cache alone waited 5 s
    # and more. Generous bounds: the rest of the write (DRF, the database, the audit row) is slow on a busy machine.
    assert seconds < 3.0
    assert again.status_code == 200 and seconds_again < 2.0  # the outage is remembered: Redis is not tried again
    outages = {r.getMessage().split(" (")[0] for r in caplog.records if "did not answer" in r.getMessage()}
    assert outages == {"Redis did not answer for the cache", "Redis did not answer for config-change notices",
                       "Redis did not answer for live dashboard updates"}
    assert len([r for r in caplog.records if "did not answer" in r.getMessage()]) == 3  # once each, not per request


@pytest.mark.redis
def test_the_throttle_cache_goes_back_to_redis_after_its_back_off(fresh_outages, require_redis):
    from dashboard.cache import RedisCacheWithFallback

    db = require_redis.rsplit("/", 1)[-1]
    with SilentServer(forward_to=("127.0.0.1", 6379)) as redis:
        cache = RedisCacheWithFallback(f"redis://127.0.0.1:{redis.port}/{db}", {"KEY_PREFIX": "wv-test-guard"})
        cache.set("hits", 1)  # Redis hangs: kept in this process's memory
        assert cache.get("hits") == 1 and cache.outage.skip()
        redis.hang = False
        cache.outage._retry_at = 0.0  # as if the back-off had passed
        assert cache.get("hits") is None  # asked Redis again, which never saw the value kept in memory
        assert not cache.outage.skip()
        cache.set("hits", 2)
        assert cache.get("hits") == 2
        cache.delete("hits")
