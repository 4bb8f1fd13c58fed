"""Rate limits while Redis is in trouble: a Redis that accepts connections and never answers, one that refuses
them, and one that comes back. The limits fall back to per-process counters at once, say so once, show it in
/metrics and go back to Redis by themselves."""

import logging
import uuid

import pytest

from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until
from tests.sockets import SilentServer, closed_port

pytestmark = pytest.mark.django_db(transaction=True)


def metric(gateway, name):
    """Return the value of an unlabelled sample in the gateway's /metrics."""
    for line in scrape(gateway).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return None


def fallback_warnings(caplog):
    return [r for r in caplog.records if r.name == "routing.gateway.limits" and "per gateway process" in r.message]


def limited_gateway(sim, serve_gateway, redis_url, **overrides):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    prefix = f"wv-test-{uuid.uuid4().hex[:8]}"
    return serve_gateway(redis_url=redis_url, limits_prefix=prefix, **overrides), prefix


def statuses_and_overhead(gateway, key, count):
    """Return ([status of each request], the most time the gateway itself spent on one, in seconds).

    The gateway's own time (x-weathervane-overhead-ms: everything but the upstream) includes the limit checks and
    leaves out the test client's work, which varies a lot on a busy machine.
    """
    statuses, most = [], 0.0
    for _ in range(count):
        response = post_chat(gateway, key, "r")
        statuses.append(response.status_code)
        most = max(most, float(response.headers["x-weathervane-overhead-ms"]) / 1000)
    return statuses, most


def test_a_hung_redis_costs_a_rate_limited_request_little_and_the_limit_still_holds(sim, serve_gateway,
                                                                                     metrics_token, caplog):
    caplog.set_level(logging.WARNING, logger="routing.gateway.limits")
    with SilentServer() as redis:
        key = client_key(rpm_limit=3)  # before the gateway starts: its first snapshot has the key
        gateway, _ = limited_gateway(sim, serve_gateway, redis.url)
        statuses, slowest = statuses_and_overhead(gateway, key, 5)
        assert redis.accepted >= 1  # the gateway did try the hung Redis
    assert statuses == [200, 200, 200, 429, 429]  # enforced by this process's own counters
    assert slowest < 1.0  # redis-py's defaults waited 5 s and more per command
    assert len(sim.simulator.attempts()) == 3
    # A ping off the request path confirms the trouble, then the counters stay in memory until Redis is back.
    assert wait_until(lambda: metric(gateway, "weathervane_gateway_limits_fallback_active") == 1)
    assert metric(gateway, "weathervane_gateway_limits_fallback_total") == 1
    assert len(fallback_warnings(caplog)) == 1  # once, not once per request
    assert metric(gateway, "weathervane_gateway_limits_redis_errors_total") >= 1


def test_a_redis_that_refuses_connections_falls_back_the_same_way(sim, serve_gateway, metrics_token, caplog):
    caplog.set_level(logging.WARNING, logger="routing.gateway.limits")
    key = client_key(rpm_limit=2)
    gateway, _ = limited_gateway(sim, serve_gateway, f"redis://127.0.0.1:{closed_port()}/0")
    statuses, slowest = statuses_and_overhead(gateway, key, 4)
    assert statuses == [200, 200, 429, 429]
    assert slowest < 1.0
    assert wait_until(lambda: metric(gateway, "weathervane_gateway_limits_fallback_active") == 1)
    assert len(fallback_warnings(caplog)) == 1


@pytest.mark.redis
def test_the_limits_go_back_to_redis_by_themselves_when_it_answers_again(sim, serve_gateway, metrics_token,
                                                                        require_redis):
    import redis as redis_py

    db = require_redis.rsplit("/", 1)[-1]
    with SilentServer(forward_to=("127.0.0.1", 6379)) as redis:
        key = client_key(rpm_limit=50)
        gateway, prefix = limited_gateway(sim, serve_gateway, f"redis://127.0.0.1:{redis.port}/{db}",
                                          limits_recheck_s=0.2)
        assert post_chat(gateway, key, "r").status_code == 200
        # The failed command is confirmed by a ping in the background, then the counters move to memory.
        assert wait_until(lambda: metric(gateway, "weathervane_gateway_limits_fallback_active") == 1, timeout=5)
        redis.hang = False  # Redis is back: the next check reaches the real one
        assert wait_until(lambda: metric(gateway, "weathervane_gateway_limits_fallback_active") == 0, timeout=5)
        assert post_chat(gateway, key, "r").status_code == 200
        stored = redis_py.Redis.from_url(require_redis)
        counters = [k for k in stored.scan_iter(f"{prefix}:*")]
        assert counters and int(stored.get(counters[0])) == 1  # counted in Redis again (the first hit was local)
        stored.delete(*counters)
    assert metric(gateway, "weathervane_gateway_limits_fallback_total") == 1


def test_without_redis_the_limits_report_no_fallback(sim, serve_gateway, metrics_token):
    key = client_key(rpm_limit=1)
    gateway, _ = limited_gateway(sim, serve_gateway, "")
    assert [post_chat(gateway, key, "r").status_code for _ in range(2)] == [200, 429]
    assert metric(gateway, "weathervane_gateway_limits_fallback_total") == 0
    assert metric(gateway, "weathervane_gateway_limits_fallback_active") == 0


@pytest.mark.redis
def test_a_failed_calls_token_reservation_is_given_back_in_redis_too(sim, serve_gateway, metrics_token,
                                                                     require_redis):
    sim.simulator.configure("broken", error_rate=1.0)
    provider = make_provider(sim, tpm_limit=2000)
    make_route("bad", provider, {"b": ("broken", 100)})
    make_route("good", provider, {"g": ("fast", 100)})
    key = client_key()
    prefix = f"wv-test-{uuid.uuid4().hex[:8]}"
    gateway = serve_gateway(redis_url=require_redis, limits_prefix=prefix, retries_per_target=0)
    assert post_chat(gateway, key, "bad", max_tokens=1_000_000_000).status_code == 502
    for _ in range(3):  # the 2,000 tokens the failed call held are back: other clients of the key get through
        assert post_chat(gateway, key, "good", max_tokens=10).status_code == 200
    assert metric(gateway, "weathervane_gateway_limits_redis_errors_total") == 0  # all of it in Redis
