"""Liveness and readiness for load balancers, Kubernetes probes and LLM tools.

Answered by the gateway's raw ASGI app on both servers: the standalone
gateway, and Daphne's control plane through `mount` (so no HTTPS redirect,
host check or Django request handling is in the way). Unauthenticated, no
I/O per call: readiness reads what the config refresher already knows.

    GET /livez    200 while the process answers
    GET /readyz   200 when the database answered the config poll lately, the config snapshot is loaded and,
                  with REDIS_URL, the change-notice subscription is up; otherwise 503 naming what is missing
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
    """Return what keeps `gateway` from serving: "database", "config snapshot", "redis" (empty when ready)."""
    store = gateway.store
    stale_after = max(3 * store.poll_s, 3.0)
    gaps = []
    if store.db_answered_at is None or time.monotonic() - store.db_answered_at > stale_after:
        gaps.append("database")
    if not store.current.version:
        gaps.append("config snapshot")
    if store.redis_url and not store.redis_listening:
        gaps.append("redis")
    return gaps


async def answer(gateway, scope, send):
    """Answer a request for one of PATHS."""
    if scope["method"] not in ("GET", "HEAD"):
        await _send(send, scope, 405, {"error": "Use GET."}, [(b"allow", b"GET, HEAD")])
    elif scope["path"] == LIVE:
        await _send(send, scope, 200, {"status": "alive"})
    else:
        await _wait_for_start(gateway)
        gaps = missing(gateway)
        body = {"status": "not ready", "missing": gaps} if gaps else {"status": "ready"}
        await _send(send, scope, 503 if gaps else 200, body)


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
    while missing(gateway) and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def _send(send, scope, status, payload, extra=()):
    body = orjson.dumps(payload)
    headers = [*HEADERS, *extra, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
