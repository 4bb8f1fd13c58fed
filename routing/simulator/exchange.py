"""ASGI plumbing for one request: who asked, what they sent, and how to answer or hang up."""

import asyncio
import dataclasses
import socket
import struct
from dataclasses import dataclass

import orjson

from .bodies import error_body
from .faults import CUT
from .personalities import Reply

JSON_HEADERS = ((b"content-type", b"application/json"),)
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))


@dataclass(slots=True)
class Attempt:
    """One request as the simulator saw it; `key` keeps only the secret's last 4 characters.

    `prefill` is the content of a trailing assistant message (None without one);
    `max_tokens` what the request asked for.
    """

    time: float
    wall_time: float
    path: str
    key: str | None
    model: str | None = None
    stream: bool = False
    outcome: str = Reply.OK
    completed: bool = False
    prefill: str | None = None
    max_tokens: int | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def mask_key(key):
    """Return "…" plus the key's last 4 characters (none of a key that short), or None."""
    if key is None:
        return None
    return "…" + (key[-4:] if len(key) > 4 else "")


def bearer_key(headers):
    """Return the bearer token from ASGI headers, or None when it is missing or empty."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def read_json(receive):
    """Return the request body parsed as JSON, or None when it is not valid JSON."""
    message = await receive()
    body = message.get("body", b"")
    if message.get("more_body"):
        chunks = [body]
        while message.get("more_body"):
            message = await receive()
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


async def send_json(send, status, body, headers=JSON_HEADERS):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive):
    while (await receive())["type"] != "http.disconnect":
        pass


def _linger_zero(transport):
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock = transport.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (AttributeError, OSError):
        pass  # a plain close still reads as a dropped connection


class Exchange:
    """One request and its response: the ASGI callables, the attempt record, and waits that end early."""

    __slots__ = ("held", "receive", "send", "attempt", "_watcher")

    def __init__(self, held, receive, send, attempt):
        self.held = held  # the simulator's set of waits that release() ends
        self.receive = receive
        self.send = send
        self.attempt = attempt
        self._watcher = None

    async def reply(self, status, body, outcome=Reply.OK, headers=JSON_HEADERS):
        self.attempt.outcome = str(outcome)
        await send_json(self.send, status, body, headers)
        self.attempt.completed = True

    async def error(self, status, outcome, message, code, type_="invalid_request_error", headers=()):
        await self.reply(status, error_body(message, type_, code), outcome, (*JSON_HEADERS, *headers))

    async def pause(self, seconds):
        """Wait seconds; return False early when the client left or the simulator released held requests."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(_until_disconnect(self.receive))
        released = asyncio.get_running_loop().create_future()
        self.held.add(released)
        try:
            await asyncio.wait((self._watcher, released), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.held.discard(released)
        return not (self._watcher.done() or released.done())

    async def play(self, headers, script):
        """Send a 200 response from a faults script; the attempt completes only if the script ran to its end."""
        await self.send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        last = script.pop() if script and type(script[-1]) is bytes else b""
        for item in script:
            if type(item) is bytes:
                await self.send({"type": "http.response.body", "body": item, "more_body": True})
            elif item is CUT or not await self.pause(item):
                await self.drop()
                return
        await self.send({"type": "http.response.body", "body": last})
        self.attempt.completed = True

    async def drop(self, reset=False):
        """Close the client's connection without finishing the response.

        An ASGI app that just returns makes uvicorn answer 500, so this closes
        uvicorn's transport (reachable from its bound `send`). With reset=True
        the close is a TCP RST. Raises ConnectionAbortedError on servers that
        hide their transport; they then treat it as a crashed app.
        """
        transport = getattr(getattr(self.send, "__self__", None), "transport", None)
        if transport is None:
            raise ConnectionAbortedError("simulated connection drop")
        if reset:
            _linger_zero(transport)
        transport.abort()
        # Let connection_lost run before we return, so uvicorn sees a client
        # that went away rather than an app that forgot to respond.
        await asyncio.sleep(0)

    def close(self):
        if self._watcher is not None:
            self._watcher.cancel()
