"""Endpoints that steer a standalone simulator process; tests use the Python API instead.

They are not logged as attempts and take no key: the process listens on
loopback only.
"""

from urllib.parse import parse_qs

import orjson

from .bodies import error_body
from .exchange import read_json, send_json
from .personalities import personality_from

MODELS_PREFIX = "/_sim/models/"


async def dispatch(simulator, scope, receive, send):
    """Answer /health and /_sim/* requests; anything else is a 404."""
    path = scope["path"]
    if path == "/health":
        await send_json(send, 200, b'{"status":"ok"}')
    elif path == "/_sim/attempts":
        await attempts(simulator, scope, receive, send)
    elif path.startswith(MODELS_PREFIX):
        await put_model(simulator, scope, receive, send)
    else:
        await send_json(send, 404, error_body(f"Unknown path {path}.", "invalid_request_error", "unknown_url"))


async def attempts(simulator, scope, receive, send):
    """GET lists the attempt log (?model= filters it); DELETE clears it."""
    if scope["method"] == "DELETE":
        count = len(simulator.attempts())
        simulator.reset()
        await send_json(send, 200, orjson.dumps({"deleted": count}))
    elif scope["method"] == "GET":
        model = parse_qs(scope["query_string"].decode()).get("model", [None])[0]
        data = [attempt.as_dict() for attempt in simulator.attempts(model)]
        await send_json(send, 200, orjson.dumps({"object": "list", "data": data}))
    else:
        await _method_not_allowed(send, "Use GET or DELETE.")


async def put_model(simulator, scope, receive, send):
    """PUT /_sim/models/{name} with personality fields replaces that model's personality (its schedule starts now)."""
    name = scope["path"][len(MODELS_PREFIX):]
    if scope["method"] != "PUT" or not name:
        await _method_not_allowed(send, "Use PUT /_sim/models/{name}.")
        return
    try:
        personality = personality_from(await read_json(receive))
    except ValueError as exc:
        await send_json(send, 400, error_body(str(exc), "invalid_request_error", "invalid_personality"))
        return
    simulator.set_model(name, personality)
    await send_json(send, 200, orjson.dumps({"model": name, **personality.as_dict()}))


async def _method_not_allowed(send, message):
    await send_json(send, 405, error_body(message, "invalid_request_error", "method_not_allowed"))


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
