"""Liveness and readiness for load balancers, Kubernetes probes and LLM tools.

Answered by the gateway's raw ASGI app on both servers: the standalone
gateway, and Daphne's control plane through `mount` (so no HTTPS redirect,
host check or Django request handling is in the way). Unauthenticated, no
I/O per call: readiness reads what the config refresher already knows.

Ready means "can serve from a loaded snapshot". A database or Redis that is
down degrades the process (the last snapshot keeps serving, limits count in
memory) but does not make it unready: a load balancer that drained every
worker during such an outage would turn a degraded mode into a total one.
Degraded dependencies are named in the body and in /metrics
(`weathervane_gateway_dependency_up`).

    GET /livez    200 while the process answers
    GET /readyz   200 once a config snapshot is loaded, {"status": "ready"} plus "degraded": [...] naming a
                  database that has not answered the config poll lately or, with REDIS_URL, a change-notice
                  subscription that is down; 503 {"status": "not ready", "missing": ["config snapshot"]} before
    GET /health   the same as /readyz: the path load balancers and LLM load testers ask first
"""

import asyncio
import time

import orjson

LIVE = "/livez"
READY = ("/readyz", "/health")
PATHS = frozenset((LIVE, *READY))
START_WAIT_S = 2.0  # Daphne starts the gateway on its first request: give the first snapshot this long
HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def missing(gateway):
    """Return what keeps `gateway` from serving: ["config snapshot"] until one is loaded, else []."""
    return [] if gateway.store.current.version else ["config snapshot"]


def dependencies(gateway):
    """Return {"database": up, "redis": up} (redis only with REDIS_URL): what /readyz calls degraded and
    /metrics reports, from what the config refresher and the change-notice listener last saw."""
    store = gateway.store
    stale_after = max(3 * store.poll_s, 3.0)
    answered = store.db_answered_at
    states = {"database": answered is not None and time.monotonic() - answered <= stale_after}
    if store.redis_url:
        states["redis"] = store.redis_listening
    return states


def degraded(gateway):
    """Return the dependencies that are down, in a fixed order ("database", "redis")."""
    return [name for name, up in dependencies(gateway).items() if not up]


def readiness(gateway):
    """Return (status code, body) of /readyz."""
    gaps = missing(gateway)
    body = {"status": "not ready", "missing": gaps} if gaps else {"status": "ready"}
    down = degraded(gateway)
    if down:
        body["degraded"] = down
    return (503 if gaps else 200), body


async def answer(gateway, scope, send):
    """Answer a request for one of PATHS."""
    if scope["method"] not in ("GET", "HEAD"):
        await _send(send, scope, 405, {"error": "Use GET."}, [(b"allow", b"GET, HEAD")])
    elif scope["path"] == LIVE:
        await _send(send, scope, 200, {"status": "alive"})
    else:
        await _wait_for_start(gateway)
        status, body = readiness(gateway)
        await _send(send, scope, status, body)


async def _wait_for_start(gateway):
    """On the call that starts the gateway, wait up to START_WAIT_S for the snapshot and the Redis subscription."""
    if gateway.started:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WAIT_S
    try:
        await asyncio.wait_for(asyncio.shield(gateway.start()), START_WAIT_S)
    except TimeoutError:  # still loading: report what is missing now, the start goes on
        return
    while (missing(gateway) or degraded(gateway)) and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def _send(send, scope, status, payload, extra=()):
    body = orjson.dumps(payload)
    headers = [*HEADERS, *extra, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
