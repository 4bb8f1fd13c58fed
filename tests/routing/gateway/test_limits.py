"""Rate limits: per gateway key rpm, per provider key rpm and tpm, and counters
shared through Redis by two gateway processes."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[3]


def test_a_gateway_key_over_its_rpm_gets_429_with_retry_after_and_no_upstream_call(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key(rpm_limit=3)
    other = client_key("other app")
    gateway = serve_gateway()
    assert [post_chat(gateway, key, "r").status_code for _ in range(3)] == [200, 200, 200]
    refused = post_chat(gateway, key, "r")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "3 requests per minute" in error["message"]
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


def test_a_failing_request_with_a_huge_max_tokens_does_not_hold_the_keys_token_budget(sim, serve_gateway):
    sim.simulator.configure("broken", error_rate=1.0)
    provider = make_provider(sim, tpm_limit=2000)
    make_route("bad", provider, {"b": ("broken", 100)})
    make_route("good", provider, {"g": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(retries_per_target=0)
    assert post_chat(gateway, key, "bad", max_tokens=1_000_000_000).status_code == 502
    for _ in range(3):  # other clients of the same key still get through
        assert post_chat(gateway, key, "good", max_tokens=10).status_code == 200


def test_n_choices_count_against_the_token_estimate():
    from routing.gateway.limits import estimate_tokens

    one = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}
    assert estimate_tokens(one) == 10 + 100
    assert estimate_tokens({**one, "n": 3}) == 10 + 300


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


SEED = """
import django, sys
django.setup()
from routing.models import ApiKey, Deployment, GatewayKey, Provider, Route, RouteTarget
provider = Provider.objects.create(name="sim", base_url=sys.argv[1])
key = ApiKey(provider=provider, label="k")
key.set_secret("sk-test-key-0001")
key.save()
deployment = Deployment.objects.create(name="d", provider=provider, upstream_model="fast")
RouteTarget.objects.create(route=Route.objects.create(name="r"), deployment=deployment, weight=100)
client = GatewayKey(name="app", rpm_limit=30)
print(client.generate())
client.save()
"""


@pytest.mark.redis
def test_two_gateway_os_processes_share_one_limit_through_redis(sim, require_redis, tmp_path):
    """`manage.py gateway` twice, as a scaled deployment runs it: 30 rpm in all, not 30 each."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path), "REDIS_URL": require_redis,
            "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS": "true",
            "WEATHERVANE_GATEWAY_LIMITS_PREFIX": f"wv-test-{uuid.uuid4().hex[:8]}",
            "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    seeded = subprocess.run([sys.executable, "-c", SEED, sim.base_url], cwd=ROOT, env=env, check=True, timeout=60,
                            capture_output=True, text=True)
    key = seeded.stdout.strip().splitlines()[-1]
    ports = [_free_port(), _free_port()]
    servers = [subprocess.Popen([sys.executable, "manage.py", "gateway", "--port", str(port), "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for port in ports]
    try:
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        with httpx.Client(timeout=10) as client:
            for port in ports:
                _wait_until_up(client, f"http://127.0.0.1:{port}/v1/models", headers)
            sim.simulator.reset()
            statuses = [client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                    headers=headers).status_code
                        for _ in range(40) for port in ports]
    finally:
        for server in servers:
            server.terminate()
            server.wait(15)
    accepted = statuses.count(200)
    assert 27 <= accepted <= 33  # within 10% of the limit, not twice it
    assert statuses.count(429) == len(statuses) - accepted
    assert len(sim.simulator.attempts()) == accepted


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(client, url, headers, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(url, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not come up")
