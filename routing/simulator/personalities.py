"""How a simulated model behaves: latency, pace, error rates and faults."""

import dataclasses
import enum
import math
from dataclasses import dataclass

# The 99th percentile of the standard normal distribution: a log-normal whose
# median is m and p99 is p has sigma = ln(p / m) / Z_99.
Z_99 = 2.3263478740408408


class Fault(enum.StrEnum):
    """Ways a chat completion goes wrong after the request was accepted.

    Comments say what a client sees (checked with httpx, aiohttp and the
    openai SDK under uvicorn). Embeddings ignore faults.
    """

    # TCP RST, no status line: httpx.ReadError "Connection reset by peer",
    # aiohttp ClientOSError, openai APIConnectionError.
    RESET_BEFORE_HEADERS = "reset_before_headers"
    # Nothing at all until the client's read timeout (httpx.ReadTimeout);
    # the connection is dropped after 300 s or when the server stops.
    SILENCE = "silence"
    # Headers at once, then the first byte of the body after fault_delay_s (5 s).
    SLOW_FIRST_TOKEN = "slow_first_token"
    # Half the tokens (or fault_after_tokens), then the connection closes mid chunked body:
    # httpx.RemoteProtocolError "incomplete chunked read", aiohttp ClientPayloadError.
    # No finish_reason and no [DONE]; a non-streaming body is cut in half the same way.
    CUT_MIDWAY = "cut_midway"
    # Half the tokens (or fault_after_tokens), fault_delay_s (30 s) of quiet on an open connection, then the rest.
    STALL = "stall"
    # One extra `data:` event midway that is not valid JSON; the tokens around it
    # are all there. A non-streaming body is half a JSON document.
    MALFORMED_CHUNK = "malformed_chunk"
    # A complete stream with finish_reason (and usage) but no `data: [DONE]`.
    # Non-streaming answers are normal.
    NO_DONE = "no_done"
    # HTTP 200 whose only event is `data: {"error": {...}}`; the openai SDK raises
    # APIError. A non-streaming 200 carries the same error object as its body.
    ERROR_FIRST_EVENT = "error_first_event"
    # Half the tokens (or fault_after_tokens), then `data: {"error": {...}}` and the end of
    # the body: no finish_reason, no [DONE]. A non-streaming 200 carries the error object.
    ERROR_MIDWAY = "error_midway"
    # HTTP 400 `context_length_exceeded` in OpenAI's words, whatever the prompt (the
    # provider counted more tokens than the gateway estimated); openai BadRequestError.
    # A model with a `context_window` answers the same when the prompt plus max_tokens exceed it.
    CONTEXT_LENGTH = "context_length"


class Reply(enum.StrEnum):
    """What the simulator did with a request (its attempt log), not how a client should read it:
    that is routing.outcomes. A fault's name is used as is."""

    OK = "ok"
    ERROR_500 = "error_500"
    ERROR_503 = "error_503"
    RATE_LIMITED = "rate_limited"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    PREFILL_REFUSED = "prefill_refused"
    CONTEXT_LENGTH = "context_length"
    CONTENT_FILTER = "content_filter"


@dataclass(frozen=True)
class Change:
    """A scheduled change of behaviour, from after_s until until_s (None: for good) after the model was set.

    latency_scale multiplies the latency (median and p99); error_rate_delta and
    rate_429_delta add points (0.02 = +2 pp), kept within 0..1. A window with
    error_rate_delta=1 and an until_s is an outage that recovers.
    """

    after_s: float
    until_s: float | None = None
    latency_scale: float = 1.0
    error_rate_delta: float = 0.0
    rate_429_delta: float = 0.0

    def __post_init__(self):
        """Raises ValueError naming the first field that makes no sense."""
        if self.after_s < 0:
            raise ValueError("after_s must not be negative")
        if self.until_s is not None and self.until_s <= self.after_s:
            raise ValueError("until_s must be after after_s")
        if self.latency_scale <= 0:
            raise ValueError("latency_scale must be positive")
        for name in ("error_rate_delta", "rate_429_delta"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between -1 and 1")

    def active(self, elapsed_s):
        return elapsed_s >= self.after_s and (self.until_s is None or elapsed_s < self.until_s)


def _change_from(value):
    if isinstance(value, Change):
        return value
    if not isinstance(value, dict):
        raise ValueError("a schedule is a list of objects with after_s and the changes")
    try:
        return Change(**value)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def _clamp(value):
    return min(max(value, 0.0), 1.0)


@dataclass(frozen=True)
class Personality:
    """One simulated model. Times in ms or s as named; rates are 0..1.

    Latency is the wait before the status line, log-normal from its median
    and p99 (constant when p99 is not above the median). tokens_per_s paces a
    stream, 0 meaning as fast as possible. A request gets rate_429, then
    error_rate (500 and 503 in turn; with overload_retry_after_s, always 503
    with that Retry-After), then fault with fault_rate. answer
    replaces the "tok0 tok1 ..." content; report_model is the model name
    reported back, for a silent swap. fault_after_tokens says after how many
    tokens cut_midway, stall, malformed_chunk and error_midway strike (None:
    half of them). retry_after_s None sends 429s without Retry-After;
    error_status fixes the status of errors (else 500 and 503 in turn);
    fail_first makes the first N chat requests after the model was set answer
    500. context_window refuses (400, context_length_exceeded) a request whose
    prompt estimate plus max_tokens exceeds it (the
    context_length fault refuses whatever the prompt); content_filter refuses every
    chat request as OpenAI's moderation does (400, content_filter).

    A request whose last message is the assistant's is a prefill: the answer
    continues from it ("tok0 tok1 " continues with "tok2 ", max_tokens counting
    only the new tokens), or it is refused with a 400 when accepts_prefill is false.
    """

    latency_median_ms: float = 0
    latency_p99_ms: float = 0
    tokens_per_s: float = 0
    output_tokens: int = 16
    max_output_tokens: int = 4096
    error_rate: float = 0
    rate_429: float = 0
    retry_after_s: float | None = 1
    error_status: int | None = None
    fail_first: int = 0
    context_window: int | None = None
    content_filter: bool = False
    overload_retry_after_s: float | None = None
    fault: Fault | None = None
    fault_rate: float = 1.0
    fault_delay_s: float | None = None
    fault_after_tokens: int | None = None
    accepts_prefill: bool = True
    answer: str | None = None
    report_model: str | None = None
    schedule: tuple = ()

    def __post_init__(self):
        """Raises ValueError naming the first field that makes no sense."""
        if not isinstance(self.schedule, (list, tuple)):
            raise ValueError("schedule must be a list of changes")
        object.__setattr__(self, "schedule", tuple(_change_from(change) for change in self.schedule))
        if self.fault is not None:
            object.__setattr__(self, "fault", Fault(self.fault))
        for name in ("error_rate", "rate_429", "fault_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate + self.rate_429 > 1:
            raise ValueError("error_rate + rate_429 must not exceed 1")
        if self.overload_retry_after_s is not None and self.overload_retry_after_s < 0:
            raise ValueError("overload_retry_after_s must not be negative")
        for name in ("latency_median_ms", "latency_p99_ms", "tokens_per_s", "retry_after_s"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.error_status is not None and self.error_status not in (500, 502, 503, 504):
            raise ValueError("error_status must be 500, 502, 503 or 504")
        for name in ("fail_first",):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{name} must be a whole number >= 0")
        if self.output_tokens < 0 or self.max_output_tokens < 1:
            raise ValueError("output_tokens must be >= 0 and max_output_tokens >= 1")
        if self.fault_after_tokens is not None and (type(self.fault_after_tokens) is not int
                                                    or self.fault_after_tokens < 0):
            raise ValueError("fault_after_tokens must be a whole number >= 0")
        for name in ("accepts_prefill", "content_filter"):
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name} must be true or false")
        if self.context_window is not None and (type(self.context_window) is not int or self.context_window < 1):
            raise ValueError("context_window must be a whole number of tokens >= 1, or null")

    def at(self, elapsed_s):
        """Return the personality in effect elapsed_s after the model was set: every active Change applied."""
        active = [change for change in self.schedule if change.active(elapsed_s)]
        if not active:
            return self
        scale = math.prod(change.latency_scale for change in active)
        rate_429 = _clamp(self.rate_429 + sum(change.rate_429_delta for change in active))
        error_rate = _clamp(self.error_rate + sum(change.error_rate_delta for change in active))
        return dataclasses.replace(
            self, latency_median_ms=self.latency_median_ms * scale, latency_p99_ms=self.latency_p99_ms * scale,
            rate_429=rate_429, error_rate=min(error_rate, 1.0 - rate_429), schedule=(),
        )

    def sample_latency_s(self, rng):
        """Return one time-to-first-byte in seconds, log-normal around the median."""
        median = self.latency_median_ms
        if median <= 0:
            return 0.0
        if self.latency_p99_ms <= median:
            return median / 1000
        sigma = math.log(self.latency_p99_ms / median) / Z_99
        return rng.lognormvariate(math.log(median), sigma) / 1000

    def output_length(self, max_tokens, prefilled=0):
        """Return how many new tokens to generate when the client asked for max_tokens (or None)
        after `prefilled` tokens of an assistant prefill (they count against output_tokens, not max_tokens)."""
        return min(max_tokens or max(self.output_tokens - prefilled, 0), self.max_output_tokens)

    def delay_s(self):
        """Return how long slow_first_token or stall holds the response."""
        if self.fault_delay_s is not None:
            return float(self.fault_delay_s)
        return 30.0 if self.fault == Fault.STALL else 5.0

    def as_dict(self):
        return dataclasses.asdict(self)


def _fault_personalities():
    return {f"fault-{fault.value.replace('_', '-')}": Personality(fault=fault) for fault in Fault}


# The demo's models have windows (reported by GET /v1/models as vLLM does), so its deployments show one discovered.
PERSONALITIES = {
    "steady": Personality(latency_median_ms=40, latency_p99_ms=80, tokens_per_s=200, context_window=128_000),
    "heavy-tailed": Personality(latency_median_ms=60, latency_p99_ms=900, context_window=32_768),
    "flaky": Personality(latency_median_ms=50, error_rate=0.15, rate_429=0.1, context_window=16_384),
    "fast": Personality(),
    "no-prefill": Personality(accepts_prefill=False),
    **_fault_personalities(),
}


def personality_from(value):
    """Return a Personality given one, a built-in's name, or JSON-style fields.

    In fields, "base" names a built-in to start from. Raises ValueError for an
    unknown name, field or value.
    """
    if isinstance(value, Personality):
        return value
    if isinstance(value, str):
        value = {"base": value}
    if not isinstance(value, dict):
        raise ValueError("a personality is a built-in name or an object of fields")
    fields = dict(value)
    base = fields.pop("base", None)
    if base is not None and base not in PERSONALITIES:
        raise ValueError(f"unknown base personality {base!r}")
    try:
        return dataclasses.replace(PERSONALITIES[base] if base else Personality(), **fields)
    except TypeError as exc:
        raise ValueError(str(exc)) from exc
