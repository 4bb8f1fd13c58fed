"""The split end to end: real requests through the gateway follow the weights,
weight 0 gets nothing, and a session id sticks to its target."""

import asyncio
import math
import random
from collections import Counter

import httpx
import pytest

from tests.routing.gateway.helpers import client_key, make_provider, make_route

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


async def served_by(gateway, key, count, sessions=None):
    """Send `count` requests (10 at a time); return the deployment header of each, in order."""
    headers = {"Authorization": f"Bearer {key.plaintext}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        async def one(i):
            extra = {"x-session-id": sessions[i]} if sessions else {}
            response = await client.post("/chat/completions", json=BODY, headers=extra)
            assert response.status_code == 200
            return response.headers["x-weathervane-deployment"]

        results = []
        for start in range(0, count, 10):
            results += await asyncio.gather(*(one(i) for i in range(start, min(start + 10, count))))
        return results


@pytest.fixture
def split_gateway(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("r", provider, {"stable": ("fast", 90), "canary": ("fast", 10), "off": ("fast", 0)})
    key = client_key()
    return serve_gateway(rng=random.Random(20261122)), key  # seeded: the 99% interval must not fail 1 run in 100


def test_traffic_follows_the_weights_and_weight_0_gets_none(split_gateway, sim):
    gateway, key = split_gateway
    counts = Counter(asyncio.run(served_by(gateway, key, 400)))
    spread = 2.5758 * math.sqrt(400 * 0.1 * 0.9)  # the 99% binomial interval around 40
    assert 40 - spread <= counts["canary"] <= 40 + spread
    assert counts["off"] == 0 and counts["stable"] + counts["canary"] == 400


def test_a_session_id_keeps_its_target(split_gateway):
    gateway, key = split_gateway
    sessions = [f"user-{i % 20}" for i in range(200)]  # 20 sessions, 10 requests each
    served = asyncio.run(served_by(gateway, key, 200, sessions))
    per_session = {}
    for session, deployment in zip(sessions, served, strict=True):
        per_session.setdefault(session, set()).add(deployment)
    assert all(len(deployments) == 1 for deployments in per_session.values())
    assert {d for ds in per_session.values() for d in ds} <= {"stable", "canary"}
