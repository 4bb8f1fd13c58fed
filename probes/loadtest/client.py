"""One timed chat completion over aiohttp: the load generator's only outbound call.

`Sender.send(prompt)` returns a metrics.Sample and never raises for anything the
target does: failures are data, classified with the probes' outcome names and
with every secret redacted from the error text.
"""

import time
from dataclasses import dataclass, field

import aiohttp
import orjson

from probes.loadtest.metrics import Sample, stream_figures
from routing import sse
from routing.outcomes import Outcome, http_failure, redact

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
        connector = aiohttp.TCPConnector(limit=self.connections, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, headers=self.headers, timeout=self.timeout)
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
        """Send one request and return its Sample (times in ms from the send)."""
        sample = Sample()
        sent = time.perf_counter()
        try:
            async with self.session.post(self.target.url, data=self.body(prompt)) as response:
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
        except (aiohttp.ClientError, OSError) as exc:
            sample.outcome, sample.error = Outcome.CONNECT_ERROR, f"{type(exc).__name__}: {exc}"[:200]
        if sample.e2e is None:
            sample.e2e = (time.perf_counter() - sent) * 1000
        sample.error = redact(sample.error, (self.target.secret,))
        sample.cost = self.target.cost(sample.deployment, sample.tokens_in, sample.tokens_out)
        return sample


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
    reading = _StreamReading()
    buffer = b""
    async for chunk in response.content.iter_any():
        events, buffer = sse.split_events(buffer + chunk)
        for event in events:
            if not reading.take(sse.event_data(event), time.perf_counter()):
                break
        if reading.finished:
            break
    end = time.perf_counter()
    reading.close(sample)
    tokens = sample.tokens_out or reading.content_chunks
    sample.tokens_out = tokens
    for name, value in stream_figures(sent, reading.chunk_times, end, tokens).items():
        setattr(sample, name, value)


class _StreamReading:
    """Folds the events of one stream: content chunk times, usage, [DONE] and finish_reason."""

    def __init__(self):
        self.chunk_times = []
        self.usage = None
        self.done = False
        self.finish_reason = False
        self.problem = None
        self.finished = False

    @property
    def content_chunks(self):
        return len(self.chunk_times)

    def take(self, data, now):
        try:
            payload = sse.parse(data)
        except sse.Malformed:
            return self._stop((Outcome.MALFORMED, "an event was not JSON"))
        if payload is sse.DONE:
            self.done = True
            return self._stop(None)
        if payload is None:
            return True
        message = sse.error_of(payload)
        if message:
            return self._stop((Outcome.SERVER_ERROR, f"error event: {message}"))
        if sse.has_content(payload):
            self.chunk_times.append(now)
        try:
            self.usage = sse.usage_of(payload) or self.usage
        except sse.Malformed as bad:
            return self._stop((Outcome.MALFORMED, str(bad)))
        self.finish_reason = self.finish_reason or any(
            isinstance(c, dict) and c.get("finish_reason") for c in payload.get("choices") or ())
        return True

    def _stop(self, problem):
        self.problem = problem
        self.finished = True
        return False

    def close(self, sample):
        if self.usage:
            sample.tokens_in, sample.tokens_out = self.usage
        if self.problem:
            sample.outcome, sample.error = self.problem
        elif not (self.done and self.finish_reason):
            missing = "[DONE]" if not self.done else "finish_reason"
            sample.outcome, sample.error = Outcome.TRUNCATED, f"stream ended without {missing}"
