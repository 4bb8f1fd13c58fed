"""Helpers of the gateway tests: a registry built around the simulator, requests, waits.
The fixtures (`sim`, `serve_gateway`, `metrics_token`) are in tests/conftest.py.

Test modules import the fixtures they use by name (pytest finds fixtures in
a module's namespace). The gateway builds its snapshot in its own threads,
so tests that serve it use `django_db(transaction=True)`.
"""

import logging
import time
from decimal import Decimal

import httpx
from django.db import OperationalError

from routing.models import ApiKey, Deployment, GatewayKey, Provider, Route, RouteTarget

# httpx logs every request at INFO: thousands of lines in the load tests.
logging.getLogger("httpx").setLevel(logging.WARNING)

METRICS_TOKEN = "test-metrics-token-0001"

# Short timeouts keep the fault tests fast; the defaults are for production.
FAST = {"flush_interval_s": 0.2, "poll_s": 0.2, "deadline_s": 5.0}


def scrape(server, **headers):
    """GET /metrics as Prometheus does (with `authorization: credentials:`), unless headers say otherwise."""
    return httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}", **headers})


def make_provider(server, name="sim", keys=("sk-test-key-0001",), read_timeout=2.0, connect_timeout=1.0, **key_fields):
    provider = Provider.objects.create(name=name, base_url=server.base_url, read_timeout=read_timeout,
                                       connect_timeout=connect_timeout)
    for n, secret in enumerate(keys):
        key = ApiKey(provider=provider, label=f"key{n + 1}", **key_fields)
        key.set_secret(secret)
        key.save()
    return provider


def make_route(name, provider, weights, prices=None):
    """Create route `name` with {deployment name: (upstream model, weight)} at `provider`."""
    route = Route.objects.create(name=name)
    for deployment_name, (model, weight) in weights.items():
        deployment, _ = Deployment.objects.get_or_create(
            name=deployment_name, defaults={"provider": provider, "upstream_model": model,
                                            "input_price_per_mtok": Decimal("1"),
                                            "output_price_per_mtok": Decimal("2")},
        )
        RouteTarget.objects.create(route=route, deployment=deployment, weight=weight)
    return route


def client_key(name="app", rpm_limit=None, routes=None):
    key = GatewayKey(name=name, rpm_limit=rpm_limit, all_routes=routes is None)
    key.plaintext = key.generate()
    key.save()
    if routes:
        key.routes.set(routes)
    return key


def post_chat(server, key, model, stream=False, headers=None, timeout=10.0, **fields):
    body = {"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream, **fields}
    auth = {"Authorization": f"Bearer {key.plaintext}"} if key is not None else {}
    return httpx.post(f"{server.base_url}/chat/completions", json=body, headers={**auth, **(headers or {})},
                      timeout=timeout)


def wait_until(condition, timeout=3.0, step=0.02):
    """Poll `condition()` until it is truthy; return its last value.

    The test database is SQLite's shared in-memory one, where a read can find
    a table locked while a gateway thread writes: that counts as "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OperationalError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
