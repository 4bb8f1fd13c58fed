"""One timed chat completion over aiohttp: the load generator's only outbound call.

`Sender.send(prompt)` returns a metrics.Sample and never raises for anything the
target does: failures are data, classified with the probes' outcome names and
with every secret redacted from the error text.

Redirects are never followed. A direct run (a provider's URL, with its key) goes
out under the gateway's own outbound policy: the gateway's `GuardedResolver`
checks every address it resolves, and aiohttp dials exactly those, so a name
that answers public at the start and 127.0.0.1 later never gets the key inside.
It also honours the key's rpm and tpm (`Pace`) and the provider's max_concurrency.
"""

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from probes.loadtest.metrics import Sample, stream_figures
from routing import sse
from routing.gateway.upstream import GuardedResolver
from routing.outcomes import Outcome, http_failure, redact
from routing.streams import StreamReader

USER_AGENT = "weathervane-loadtest/1"
MAX_ERROR_BODY = 2048


@dataclass(frozen=True)
class Target:
    """Where requests go. `prices` maps deployment names to ($ in, $ out) per 1M tokens;
    `deployment` names the one that answers when the target does not say (direct runs)."""

    url: str
    model: str
    secret: str = field(default="", repr=False)
    prices: dict = field(default_factory=dict)
    deployment: str = ""
    label: str = ""
    guarded: bool = False  # a provider's URL: the gateway's address policy when connecting
    max_in_flight: int = 0  # the provider's max_concurrency (0: unbounded)
    rpm: int | None = None  # the provider key's limits
    tpm: int | None = None

    def cost(self, deployment, tokens_in, tokens_out):
        price_in, price_out = self.prices.get(deployment or self.deployment, (0.0, 0.0))
        return (price_in * tokens_in + price_out * tokens_out) / 1_000_000


class Sender:
    """Sends requests to one Target on a shared aiohttp session (open with `async with`)."""

    def __init__(self, target, max_tokens, stream=True, timeout_s=60.0, connections=0):
        self.target = target
        self.max_tokens = max_tokens
        self.stream = stream
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(10.0, timeout_s))
        self.connections = connections
        self.session = None
        headers = {"user-agent": USER_AGENT, "content-type": "application/json"}
        if target.secret:
            headers["authorization"] = f"Bearer {target.secret}"
        self.headers = headers

    async def __aenter__(self):
        resolver = GuardedResolver() if self.target.guarded else None
        connector = aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300, resolver=resolver)
        self.session = aiohttp.ClientSession(connector=connector, headers=self.headers, timeout=self.timeout)
        self.slots = asyncio.Semaphore(self.target.max_in_flight) if self.target.max_in_flight else None
        self.pace = Pace(self.target.rpm, self.target.tpm)
        return self

    async def __aexit__(self, *exc):
        await self.session.close()

    def body(self, prompt):
        payload = {"model": self.target.model, "messages": list(prompt.messages),
                   "max_tokens": prompt.max_tokens or self.max_tokens, "stream": self.stream}
        if self.stream:
            payload["stream_options"] = {"include_usage": True}
        return orjson.dumps(payload)

    async def send(self, prompt):
        """Send one request (within the target's concurrency and pace) and return its Sample (times in ms
        from the send, after any wait for a slot)."""
        if self.slots is None:
            return await self._paced(prompt)
        async with self.slots:
            return await self._paced(prompt)

    async def _paced(self, prompt):
        await self.pace.wait(prompt.estimated_tokens() + (prompt.max_tokens or self.max_tokens))
        return await self._send(prompt)

    async def _send(self, prompt):
        sample = Sample()
        sent = time.perf_counter()
        try:
            async with self.session.post(self.target.url, data=self.body(prompt), allow_redirects=False) as response:
                sample.status = response.status
                sample.deployment = response.headers.get("x-weathervane-deployment", self.target.deployment)
                if response.status != 200:
                    await _read_error(response, sample)
                elif self.stream:
                    await _read_stream(response, sample, sent)
                else:
                    await _read_body(response, sample, sent)
        except TimeoutError:
            sample.outcome, sample.error = Outcome.TIMEOUT, "no complete answer in time"
        except aiohttp.ClientPayloadError as exc:
            sample.outcome, sample.error = Outcome.TRUNCATED, f"stream broke: {type(exc).__name__}"
        except aiohttp.ClientConnectorError as exc:  # its os_error says why (the address policy's refusal, too)
            sample.outcome, sample.error = Outcome.CONNECT_ERROR, f"cannot connect: {exc.os_error or exc}"[:200]
        except (aiohttp.ClientError, OSError) as exc:
            sample.outcome, sample.error = Outcome.CONNECT_ERROR, f"{type(exc).__name__}: {exc}"[:200]
        if sample.e2e is None:
            sample.e2e = (time.perf_counter() - sent) * 1000
        sample.error = redact(sample.error, (self.target.secret,))
        sample.cost = self.target.cost(sample.deployment, sample.tokens_in, sample.tokens_out)
        return sample


class Pace:
    """Spaces request starts so that a key's rpm and tpm (tokens: prompt estimate + max_tokens) hold in every
    minute: one start every 60/rpm s, and every 60 × tokens/tpm s (the larger). No limits: no wait."""

    def __init__(self, rpm=None, tpm=None):
        self.rpm = rpm
        self.tpm = tpm
        self.next_at = 0.0

    def gap_s(self, tokens):
        gaps = [0.0]
        if self.rpm:
            gaps.append(60 / self.rpm)
        if self.tpm:
            gaps.append(60 * tokens / self.tpm)
        return max(gaps)

    async def wait(self, tokens):
        gap = self.gap_s(tokens)
        if not gap:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + gap  # reserved before sleeping: concurrent callers queue one gap apart
        if at > now:
            await asyncio.sleep(at - now)


async def _read_error(response, sample):
    failure = http_failure(response.status, response.headers, await response.content.read(MAX_ERROR_BODY))
    sample.outcome, sample.error = failure.outcome, failure.message


async def _read_body(response, sample, sent):
    try:
        body = orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        sample.outcome, sample.error = Outcome.MALFORMED, "the body was not JSON"
        return
    sample.e2e = (time.perf_counter() - sent) * 1000
    message = sse.error_of(body)
    if message:
        sample.outcome, sample.error = Outcome.SERVER_ERROR, f"error body: {message}"
        return
    try:
        usage = sse.usage_of(body)
    except sse.Malformed as bad:
        sample.outcome, sample.error = Outcome.MALFORMED, str(bad)
        return
    if usage:
        sample.tokens_in, sample.tokens_out = usage
    if sample.tokens_out > 1:
        sample.tpot = sample.e2e / sample.tokens_out


async def _read_stream(response, sample, sent):
    reader = StreamReader(needs_usage=True, timed=True)  # the gateway's rules (routing.streams); usage was asked
    try:
        outcome, problem = await _read_events(response, reader)
    except TimeoutError:  # the connection failed after the headers: the reader judges what came
        outcome, problem = reader.broke(Outcome.TIMEOUT, "no complete answer in time")
    except (aiohttp.ClientError, OSError) as exc:
        outcome, problem = reader.broke(Outcome.CONNECT_ERROR, type(exc).__name__)
    end = time.perf_counter()
    sample.outcome, sample.error = outcome, problem
    if reader.usage:
        sample.tokens_in, sample.tokens_out = reader.usage
    tokens = sample.tokens_out or reader.content_chunks
    sample.tokens_out = tokens
    for name, value in stream_figures(sent, reader.chunk_times, end, tokens).items():
        setattr(sample, name, value)


async def _read_events(response, reader):
    """Feed the stream's events to `reader` until [DONE], a failure or the end; return (outcome, message)."""
    buffer = b""
    async for chunk in response.content.iter_any():
        events, buffer = sse.split_events(buffer + chunk)
        for event in events:
            payload = reader.take(sse.event_data(event))
            if reader.problem is not None or payload is sse.DONE:
                return reader.end()
    return reader.end()
