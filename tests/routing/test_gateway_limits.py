"""Rate limits: per gateway key rpm, per provider key rpm and tpm, and counters
shared through Redis by two gateway processes."""

import uuid
from collections import Counter

import pytest

from tests.routing.gateway_fixtures import client_key, make_provider, make_route, post_chat, serve_gateway, sim  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_gateway_key_over_its_rpm_gets_429_with_retry_after_and_no_upstream_call(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key(rpm_limit=3)
    other = client_key("other app")
    gateway = serve_gateway()
    assert [post_chat(gateway, key, "r").status_code for _ in range(3)] == [200, 200, 200]
    refused = post_chat(gateway, key, "r")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded" and "3 requests per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(sim.simulator.attempts()) == 3
    assert post_chat(gateway, other, "r").status_code == 200  # counted per key


def test_a_provider_key_over_its_rpm_is_not_called(sim, serve_gateway):
    provider = make_provider(sim, rpm_limit=2)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway()
    assert [post_chat(gateway, key, "r").status_code for _ in range(2)] == [200, 200]
    refused = post_chat(gateway, key, "r")
    assert refused.status_code == 429 and "over its limit" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(sim.simulator.attempts()) == 2


def test_tokens_are_estimated_before_the_call_and_corrected_from_the_usage(sim, serve_gateway):
    sim.simulator.configure("terse", max_output_tokens=5)  # answers 5 tokens whatever max_tokens says
    provider = make_provider(sim, tpm_limit=100)
    make_route("r", provider, {"d": ("terse", 100)})
    key = client_key()
    gateway = serve_gateway()
    # "hello there" is ~3 prompt tokens: 3 + 80 = 83 held, corrected to 3 + 5 = 8 used.
    assert post_chat(gateway, key, "r", max_tokens=80).status_code == 200
    # Without the correction 83 + 83 would exceed 100; with it 8 + 83 fits.
    assert post_chat(gateway, key, "r", max_tokens=80).status_code == 200
    refused = post_chat(gateway, key, "r", max_tokens=90)  # 16 used + 93 held > 100
    assert refused.status_code == 429
    assert len(sim.simulator.attempts("terse")) == 2
    assert post_chat(gateway, key, "r", max_tokens=50).status_code == 200  # 16 + 53 fits


def test_a_limited_key_is_skipped_for_another_key_of_the_provider(sim, serve_gateway):
    provider = make_provider(sim, keys=("sk-first-key-0001", "sk-second-key-0002"))
    provider.keys.filter(label="key1").update(rpm_limit=1)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway()
    assert [post_chat(gateway, key, "r").status_code for _ in range(4)] == [200] * 4
    assert Counter(a.key for a in sim.simulator.attempts()) == {"…0001": 1, "…0002": 3}


@pytest.mark.redis
def test_two_gateway_processes_share_one_limit_through_redis(sim, serve_gateway, require_redis):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key(rpm_limit=30)
    prefix = f"wv-test-{uuid.uuid4().hex[:8]}"
    # Two gateways with their own limit storage objects, as two processes would have.
    first = serve_gateway(redis_url=require_redis, limits_prefix=prefix)
    second = serve_gateway(redis_url=require_redis, limits_prefix=prefix)
    assert first.gateway.limits is not second.gateway.limits
    statuses = [post_chat(gateway, key, "r").status_code for _ in range(40) for gateway in (first, second)]
    accepted = statuses.count(200)
    assert 27 <= accepted <= 33  # within 10% of the limit, not twice it
    assert statuses.count(429) == len(statuses) - accepted
    assert len(sim.simulator.attempts()) == accepted
