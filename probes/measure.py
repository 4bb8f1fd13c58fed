"""One probe: a tiny streaming chat completion, timed and classified.

`probe(request)` sends it through `open_stream`, the one seam for probe HTTP
(timeouts, the private-network check at connect time, no redirects), reads
the server-sent events and returns a `Measurement` whose `outcome` is one of
`routing.outcomes.Outcome`, classified by the same rules as the gateway's
traffic (routing.outcomes) and read with the same SSE reader (routing.sse).
It never raises for anything the upstream does: failures are data.
"""

import json
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from routing import sse
from routing.httpx_guard import GuardedTransport, is_blocked
from routing.models import sendable_secret
from routing.outcomes import Outcome, UpstreamError, http_failure, redact
from routing.patterns import PatternInvalid, compile_pattern
from routing.streams import StreamReader

USER_AGENT = "weathervane-probe/1"
MAX_ERROR_BODY = 4096
MAX_ANSWER = 2000
DATED_SUFFIX = re.compile(r"\d{4}-\d{2}-\d{2}|\d{4}|\d{8}|latest|v\d+(\.\d+)*")


@dataclass
class ProbeRequest:
    """Everything one probe sends; `secret` is the plaintext key (never logged or stored)."""

    url: str
    model: str
    payload: dict
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    expected_pattern: str = ""
    expected_json: object = None


@dataclass
class Measurement:
    """What one probe saw. Times in ms from just before the request was sent."""

    outcome: str = Outcome.OK
    status_code: int | None = None
    ttfb_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens_per_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    completed: bool = False
    saw_done: bool = False
    finish_reason: str = ""
    model_reported: str = ""
    model_swapped: bool = False
    retry_after_s: float | None = None
    error: str = ""
    text: str = ""


def build_payload(model, prompt, max_tokens, reasoning_effort=""):
    """Return the JSON body of a probe: streaming, tiny, deterministic where the model allows."""
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if reasoning_effort:
        payload["reasoning_effort"] = reasoning_effort
    return payload


def chat_url(base_url):
    return base_url.rstrip("/") + "/chat/completions"


# --- the seam ------------------------------------------------------------------

_client = None
_client_lock = threading.Lock()


def client():
    """Return the process's shared httpx client (thread-safe pool, no redirects)."""
    global _client
    with _client_lock:
        if _client is None:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
            _client = httpx.Client(transport=GuardedTransport(limits=limits), follow_redirects=False,
                                   headers={"user-agent": USER_AGENT})
        return _client


@contextmanager
def open_stream(request):
    """Yield the httpx response (headers read) of a probe; raise UpstreamError when none came.

    The private-network check runs when connecting (GuardedTransport), on the addresses connected to.
    """
    timeout = httpx.Timeout(request.timeout_s, connect=min(request.connect_timeout_s, request.timeout_s))
    headers = {"accept": "text/event-stream"}
    if request.secret:
        headers["authorization"] = f"Bearer {request.secret}"
    try:
        with client().stream("POST", request.url, json=request.payload, headers=headers, timeout=timeout) as response:
            yield response
    except httpx.ConnectTimeout:
        raise UpstreamError(Outcome.CONNECT_ERROR, "connect timed out", retryable=True) from None
    except httpx.ConnectError as exc:
        raise UpstreamError(Outcome.CONNECT_ERROR, _describe(exc), retryable=not is_blocked(exc)) from None
    except httpx.InvalidURL as exc:  # e.g. http://0177.0.0.1/: httpx refuses to parse it
        raise UpstreamError(Outcome.CONNECT_ERROR, _describe(exc), retryable=False) from None
    except httpx.TimeoutException:
        raise UpstreamError(Outcome.TIMEOUT, f"no answer within {request.timeout_s:g} s", retryable=True) from None
    except httpx.DecodingError as exc:
        raise UpstreamError(Outcome.MALFORMED, _describe(exc), retryable=False) from None
    except httpx.HTTPError as exc:  # connection refused or reset, protocol errors
        raise UpstreamError(Outcome.CONNECT_ERROR, _describe(exc), retryable=True) from None


MAX_LIST_BODY = 8 * 1024 * 1024  # a model list (OpenRouter's is a few MB); past this it is not read


def get_json(url, secret=None, timeout_s=10.0, connect_timeout_s=5.0):
    """Return the JSON of a GET (a provider's model list) through the same seam as a probe.

    Raises UpstreamError (its message redacted of `secret`) for no answer, a non-2xx status, a body past
    MAX_LIST_BODY or one that is not JSON.
    """
    timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
    headers = {"accept": "application/json"}
    if secret:
        headers["authorization"] = f"Bearer {secret}"
    try:
        with client().stream("GET", url, headers=headers, timeout=timeout) as response:
            body = _read_bounded(response, MAX_LIST_BODY + 1)
    except httpx.TimeoutException:
        raise UpstreamError(Outcome.TIMEOUT, f"no answer within {timeout_s:g} s", retryable=True) from None
    except httpx.HTTPError as exc:
        raise UpstreamError(Outcome.CONNECT_ERROR, redact(_describe(exc), (secret,)), retryable=True) from None
    if response.status_code >= 300:
        raise http_failure(response.status_code, response.headers, body[:MAX_ERROR_BODY], (secret,))
    if len(body) > MAX_LIST_BODY:
        raise UpstreamError(Outcome.MALFORMED, f"the answer is larger than {MAX_LIST_BODY} bytes", retryable=False)
    try:
        return json.loads(body)
    except ValueError:
        raise UpstreamError(Outcome.MALFORMED, "the answer is not JSON", retryable=False) from None


def _read_bounded(response, limit):
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return bytes(body)


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__


# --- one probe -----------------------------------------------------------------


UNSENDABLE_SECRET = ("the stored API key cannot be sent in an HTTP header (it has spaces, line breaks or characters "
                     "outside ASCII); enter the key again")


def probe(request):
    """Send one probe and return its Measurement (never raises for upstream failures)."""
    if request.secret is not None and not sendable_secret(request.secret):
        return Measurement(outcome=Outcome.BAD_KEY, error=UNSENDABLE_SECRET)
    started = time.perf_counter()
    result = Measurement()
    try:
        with open_stream(request) as response:
            result.ttfb_ms = _ms(started)
            result.status_code = response.status_code
            if response.status_code != 200:
                _read_error(response, result, request.secret)
            else:
                _read_stream(response, result, started, started + request.timeout_s)
    except UpstreamError as failure:
        if result.ttfb_ms is not None and failure.outcome == Outcome.CONNECT_ERROR:
            result.outcome, result.error = Outcome.TRUNCATED, f"stream broke: {failure}"
        else:
            result.outcome, result.error = failure.outcome, str(failure)
    result.total_ms = _ms(started)
    _judge(result, request)
    result.error = redact(result.error, (request.secret,))
    return result


def _ms(started):
    return (time.perf_counter() - started) * 1000


def _read_error(response, result, secret):
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= MAX_ERROR_BODY:
            break
    failure = http_failure(response.status_code, response.headers, body[:MAX_ERROR_BODY], (secret,))
    result.outcome, result.error, result.retry_after_s = failure.outcome, failure.message, failure.retry_after


# --- server-sent events ----------------------------------------------------------


class _Stream:
    """Reads one streamed completion through routing.streams (the gateway's rules) into a Measurement."""

    def __init__(self, result, started):
        self.result = result
        self.started = started
        self.reader = StreamReader(needs_usage=True, timed=True)  # probes always ask for usage
        self.text = []

    def take(self, event):
        """Fold one raw event into the result; return False to stop reading."""
        payload = self.reader.take(sse.event_data(event))
        if self.reader.problem is not None or payload is sse.DONE:
            return False
        if type(payload) is dict:
            self._take_chunk(payload)
        return True

    def _take_chunk(self, event):
        if isinstance(event.get("model"), str) and event["model"]:
            self.result.model_reported = event["model"]
        for choice in event.get("choices") or ():
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is dict and isinstance(delta.get("content"), str):
                self.text.append(delta["content"])

    def finish(self, outcome, error):
        """Fill in the result from the reader, the stream having ended with (outcome, error)."""
        result, reader = self.result, self.reader
        result.outcome, result.error = outcome, error
        result.text = "".join(self.text)[:MAX_ANSWER]
        result.saw_done, result.finish_reason = reader.done, reader.finish_reason
        result.completed = reader.whole
        if reader.usage:
            result.tokens_in, result.tokens_out = reader.usage
        result.tokens_out = result.tokens_out or reader.content_chunks
        times = reader.chunk_times
        if times:
            result.ttft_ms = (times[0] - self.started) * 1000
            span = times[-1] - times[0]
            if result.tokens_out >= 2 and span > 0.0005:
                result.tokens_per_s = (result.tokens_out - 1) / span


def _read_stream(response, result, started, deadline):
    if "text/event-stream" not in response.headers.get("content-type", ""):
        result.outcome, result.error = Outcome.MALFORMED, "expected an event stream"
        return
    stream = _Stream(result, started)
    try:
        ended = _read_events(response, stream, deadline)
    except httpx.TimeoutException:  # the connection failed after the headers: the reader judges what came
        ended = stream.reader.broke(Outcome.TIMEOUT, "the stream went silent")
    except httpx.HTTPError as exc:
        ended = stream.reader.broke(Outcome.CONNECT_ERROR, _describe(exc))
    stream.finish(*ended)


def _read_events(response, stream, deadline):
    """Feed the stream's events to `stream`; return how it ended (outcome, message). Raises UpstreamError."""
    for event in _events(response):
        if not stream.take(event):
            break
        if time.perf_counter() > deadline:
            return Outcome.TIMEOUT, "stream did not finish in time"
    return stream.reader.end()


def _events(response):
    """Yield each whole server-sent event of a streamed response (routing.sse framing).

    An unterminated event at the end is dropped, as the SSE spec, the gateway and the load tests do.
    """
    buffer = b""
    for chunk in response.iter_bytes():
        events, buffer = sse.split_events(buffer + chunk)
        yield from events


# --- correctness -------------------------------------------------------------------


def _judge(result, request):
    """Flag silent model swaps and turn a wrong answer into the wrong_answer outcome."""
    result.model_swapped = model_swapped(request.model, result.model_reported)
    if result.outcome != Outcome.OK:
        return
    problem = answer_problem(result.text, request.expected_pattern, request.expected_json)
    if problem:
        result.outcome, result.error = Outcome.WRONG_ANSWER, problem[:300]


def model_swapped(asked, reported):
    """Return True when the answer names another model. A dated variant of the
    asked name (gpt-4o → gpt-4o-2024-08-06) is the same model."""
    if not reported or not asked or reported == asked or asked.endswith("/" + reported):
        return False
    suffix = reported[len(asked) + 1:] if reported.startswith(asked + "-") else None
    return suffix is None or not DATED_SUFFIX.fullmatch(suffix)


def answer_problem(text, pattern="", shape=None):
    """Return why `text` fails the correctness check, or "" when it passes."""
    if pattern:
        try:
            found = compile_pattern(pattern).search(text)  # RE2: linear time, whatever pattern a user saved
        except PatternInvalid as exc:
            return f"the expected pattern cannot be used: {exc}"
        if not found:
            return f"answer {text[:80]!r} does not match {pattern!r}"
    if shape is not None:
        try:
            value = json.loads(text)
        except ValueError:
            return f"answer {text[:80]!r} is not JSON"
        if not matches_shape(value, shape):
            return f"answer {text[:80]!r} does not have the expected JSON shape"
    return ""


def matches_shape(value, shape):
    """Return True when `value` has `shape`: the same JSON types, and every key of
    each object in the shape (extra keys allowed); a list's shape is its first item."""
    if isinstance(shape, dict):
        return isinstance(value, dict) and all(k in value and matches_shape(value[k], s) for k, s in shape.items())
    if isinstance(shape, list):
        return isinstance(value, list) and (not shape or all(matches_shape(v, shape[0]) for v in value))
    if isinstance(shape, bool) or isinstance(value, bool):
        return isinstance(shape, bool) and isinstance(value, bool)
    if isinstance(shape, (int, float)):
        return isinstance(value, (int, float))
    if shape is None:
        return value is None
    return isinstance(value, type(shape))


def request_for(target, key, deployment=None):
    """Return the ProbeRequest for `target` sent with `key` (or none)."""
    deployment = deployment or target.deployment
    provider = deployment.provider
    return ProbeRequest(
        url=chat_url(provider.base_url),
        model=deployment.upstream_model,
        payload=build_payload(deployment.upstream_model, target.prompt, target.max_tokens, target.reasoning_effort),
        secret=key.reveal() if key is not None else None,
        timeout_s=target.timeout_s,
        connect_timeout_s=min(provider.connect_timeout, target.timeout_s),
        expected_pattern=target.expected_pattern,
        expected_json=target.expected_json,
    )

