"""One proxied request: choose a target and a key, send, retry or fail over
before the first byte reached the client, then relay the answer.

The rules (issue 3): retry with full-jitter backoff within a retry budget on
connection errors, timeouts before the first byte, 429 (after its
Retry-After, unless that outlasts the deadline: then fail over at once),
5xx (a 503 with Retry-After rests its deployment and fails over, or waits
like a 429 when no other target is left), malformed answers and an error as
a stream's first event; never retry 400/403/404/422 (they are passed through as the provider sent them). 401
makes the key suspect and tries another key. After a target's retries,
fail over to another target by weight, and after every weighted target to
the route's fallbacks in order. Targets whose context window cannot hold
the request are skipped before the call; a context-length error fails over
to a target with a larger window or one whose window is still unknown (never
the same deployment), or ends in a 400 saying none is left; the window the
error states is learned (`Proxy.on_window`), so the next request too long for
it skips that deployment without a call. A stream must open (connect,
headers, first content) within its target's first-token timeout
(routing.first_token), else it fails over. A stream
is committed (200 sent) only after its first event was read; after that
nothing is retried, and a stream that breaks ends with an SSE error event
and no [DONE]. Unless its route says otherwise (`continue_streams`: by
default only onto targets whose probe verified they continue a prefill), a
stream that breaks after content reached the client is first continued on the
next such target, with the text relayed so far as an assistant prefill
(`Continuation`); the client's usage and the request's cost then sum both.
"""

import asyncio
import enum
import time
from time import perf_counter

import orjson

from routing import sse
from routing.gateway import errors, selection, upstream
from routing.gateway.concurrency import ProviderSlots
from routing.gateway.errors import GatewayError
from routing.gateway.limits import context_tokens, estimate_tokens
from routing.gateway.retry import backoff
from routing.outcomes import DEPLOYMENT_FAILURES, Outcome, UpstreamError, redact_bytes
from routing.streams import SKIPPED, StreamReader
from routing.windows import stated_window

SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))
DEFAULT_COOLING_S = 2.0  # a 429 without Retry-After cools the key this long
MAX_COOLING_S = 3600.0


class Note(enum.StrEnum):
    """A repair the gateway made to an answer that still counts as a success (counted in /metrics)."""

    MALFORMED_SKIPPED = "malformed_event_skipped"
    DONE_ADDED = "done_added"


class Continued(enum.StrEnum):
    """How a broken stream's continuation ended (counted in /metrics)."""

    ANSWERED = "answered"  # the next target finished the answer
    REFUSED = "refused"  # it refused the prefill (a 4xx such as 400)
    FAILED = "failed"  # it failed before or while continuing
    UNAVAILABLE = "unavailable"  # no other target, key, retry budget or attempt was left


class Next(enum.Enum):
    """What follows a failed attempt."""

    RELAY_ERROR = "pass the upstream's own error to the client"
    RETRY = "try the same target again"
    ANOTHER_KEY = "try the same target with another key"
    FAIL_OVER = "try another target"
    LARGER_WINDOW = "try a target with a larger context window"


# Upstream errors pass through with the upstream's content type: browsers must not guess another.
NOSNIFF = (b"x-content-type-options", b"nosniff")


def common_headers(request_id, route, deployment, attempts, overhead_ms, fallback=""):
    """Return the headers every gateway response carries (and x-weathervane-fallback when a fallback answered)."""
    headers = [
        NOSNIFF,
        (b"x-request-id", request_id.encode()),
        (b"x-weathervane-route", route.encode()),
        (b"x-weathervane-deployment", deployment.encode()),
        (b"x-weathervane-attempts", str(attempts).encode()),
        (b"x-weathervane-overhead-ms", b"%.3f" % overhead_ms),
    ]
    if fallback:
        headers.append((b"x-weathervane-fallback", fallback.encode()))
    return headers


class Try:
    """One upstream attempt, as recorded."""

    __slots__ = ("target", "key", "outcome", "status", "ms", "ttft_ms", "tokens_in", "tokens_out", "cost", "tps",
                 "error", "continuation", "too_long")

    def __init__(self, target, key, outcome, status, ms, error="", continuation=False, too_long=False):
        self.target, self.key, self.outcome, self.status, self.ms, self.error = target, key, outcome, status, ms, error
        self.too_long = too_long  # a context-length refusal: the request's fault, kept out of the deployment's figures
        self.ttft_ms = self.tps = None
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.continuation = continuation  # it continued a broken stream from a prefill


class Call:
    """The state of one proxied request."""

    __slots__ = ("t0", "request_id", "route", "request", "raw", "url_of", "stream", "wants_usage", "session",
                 "deadline", "clients_deadline", "record", "upstream_s", "given_up", "refused_keys", "confirmed_a_key",
                 "committed", "client_gone", "tokens", "bodies",
                 "limit_waits", "response", "context", "too_long_at", "watch", "timeout")

    def __init__(self, t0, request_id, route, request, raw, url_of, session, deadline, record, clients_deadline=False):
        self.t0 = t0
        self.request_id = request_id
        self.route = route
        self.request = request
        self.raw = raw
        self.url_of = url_of
        self.stream = request.get("stream") is True and url_of == "chat_url"
        options = request.get("stream_options")
        self.wants_usage = type(options) is dict and options.get("include_usage") is True
        self.session = session
        self.deadline = deadline
        self.clients_deadline = clients_deadline  # the client asked for a shorter deadline than the gateway's
        self.record = record
        self.upstream_s = 0.0
        self.given_up = set()
        self.refused_keys = set()  # keys that answered 401 to this request: not tried again for it
        self.confirmed_a_key = False
        self.committed = False
        self.client_gone = False
        self.tokens = None
        self.bodies = {}
        self.limit_waits = []
        self.response = None
        self.context = None  # (prompt tokens, max_tokens), computed once when a window is to be checked
        self.too_long_at = None  # after an upstream's context-length error: the window a target must exceed
        self.watch = None  # the disconnect.ClientWatch while the request is served
        self.timeout = None  # the asyncio.Timeout of the deadline while the request is served

    @property
    def tried(self):
        return self.record.tried

    def body_for(self, target):
        """Return the upstream request body for `target` (model renamed; usage asked for on streams)."""
        body = self.bodies.get(target.upstream_model)
        if body is not None:
            return body
        if self.request.get("model") == target.upstream_model and (self.wants_usage or not self.stream):
            body = self.raw
        else:
            request = dict(self.request, model=target.upstream_model)
            if self.stream and not self.wants_usage:
                options = self.request.get("stream_options")
                request["stream_options"] = {**(options if type(options) is dict else {}), "include_usage": True}
            body = orjson.dumps(request)
        self.bodies[target.upstream_model] = body
        return body

    def token_estimate(self):
        if self.tokens is None:
            self.tokens = estimate_tokens(self.request)
        return self.tokens

    def context_need(self):
        """Return (prompt tokens, max_tokens) as a context window must hold them (estimated once)."""
        if self.context is None:
            self.context = context_tokens(self.request)
        return self.context

    def fits(self, target):
        """Return True when `target`'s context window can hold this request (an unknown window is assumed to).

        After an upstream said the request is too long, a known window fits only when it is larger than the
        one that refused it; an unknown one may still hold it.
        """
        window = target.context_window
        if window is None:
            return True
        if self.too_long_at is not None and window <= self.too_long_at:
            return False
        return sum(self.context_need()) <= window

    def deadline_struck(self):
        """Return True when the request's deadline has passed (what cancelled it, if anything did)."""
        if self.timeout is not None:
            return self.timeout.expired()
        return asyncio.get_running_loop().time() >= self.deadline

    def stop_watching(self):
        if self.watch is not None:
            self.watch.stop()

    def overhead_ms(self):
        return max((perf_counter() - self.t0 - self.upstream_s) * 1000, 0.0)

    def attempts(self):
        """Return how many upstream attempts were made (a target without a usable key is none)."""
        return sum(1 for t in self.record.tried if t.outcome != Outcome.NO_CAPACITY)

    def finish(self, outcome, status, target=None, key_id=None, error="", attempt=None):
        """Fill in how the request ended: the one place a request record gets its result."""
        finish(self.record, outcome, status, target, key_id, error, attempt)

    def response_headers(self, target, content_type, length, unrecorded=1):
        """Return the headers of `target`'s answer (SSE when content_type is None); records the overhead.

        `unrecorded` counts the answering attempt when it is not in `tried` yet.
        """
        overhead = self.overhead_ms()
        self.record.overhead_ms = overhead
        fallback = target.deployment if target.fallback else ""
        headers = common_headers(self.request_id, self.route.name, target.deployment, self.attempts() + unrecorded,
                                 overhead, fallback)
        if content_type is None:
            headers.extend(SSE_HEADERS)
        else:
            headers.append((b"content-type", content_type))
            headers.append((b"content-length", str(length).encode()))
        return headers


def finish(record, outcome, status, target=None, key_id=None, error="", attempt=None):
    """Set a request record's outcome, status, serving deployment (and fallback) and key, error, and usage of
    `attempt`."""
    record.outcome, record.status, record.error = outcome, status, error
    if target is not None:
        record.deployment_id, record.deployment, record.key_id = target.deployment_id, target.deployment, key_id
        record.fallback = target.deployment if target.fallback else ""
    if attempt is not None:
        record.tokens_in, record.tokens_out, record.cost = attempt.tokens_in, attempt.tokens_out, attempt.cost


class Proxy:
    """Runs Calls: choose, send, retry or fail over, relay.

    Its collaborators are the process's: key marks (`keys.KeyRing`), circuit
    breakers, the retry budget, the rng, and (from `start`) the HTTP session
    and the limits.
    """

    def __init__(self, config, keys, breakers, budget, rng, log_bodies=False):
        self.config = config
        self.keys = keys
        self.breakers = breakers
        self.budget = budget
        self.rng = rng
        self.log_bodies = log_bodies
        self.session = None
        self.limits = None
        self.slots = ProviderSlots(config.concurrency_wait_s)
        self.resting = {}  # deployment id -> monotonic time until which its 503's Retry-After asked us to stay away
        self.on_window = None  # on_window(target, tokens, error): a provider's error stated the deployment's window
        self.windows_stated = {}  # deployment id -> the window its errors last stated (reported once)

    def start(self, session, limits):
        self.session, self.limits = session, limits

    # --- choosing --------------------------------------------------------------------

    def pick_target(self, call):
        """Return the next target to try, or None when every option is used up.

        By weight (sticky with a session id) among targets not given up whose
        circuit is not open, that do not rest after a 503's Retry-After and
        whose context window fits; then the route's fallbacks in order, on
        the same terms. When every remaining target and fallback is open or
        resting, both are ignored ("panic mode", weighted targets first):
        trying beats refusing everyone.
        """
        route, breakers = call.route, self.breakers
        if not call.given_up and call.session is None:
            target = selection.pick_weighted(route.targets, route.totals, self.rng)
            if target is not None and (not self.resting or not self._resting(target.deployment_id)) and (
                    breakers.available(target.deployment_id) and (not route.windows or call.fits(target))):
                return target
        candidates = self._remaining(call, route.targets)
        pool = [t for t in candidates if self._takes_traffic(t.deployment_id)]
        if pool:
            return self._by_weight(call, pool)
        chain = self._remaining(call, route.fallbacks)
        for fallback in chain:
            if self._takes_traffic(fallback.deployment_id):
                return fallback
        if candidates:
            return self._by_weight(call, candidates)
        return chain[0] if chain else None

    @staticmethod
    def _remaining(call, targets):
        """Return `targets` not given up for `call` whose context window fits it."""
        given_up, check = call.given_up, call.route.windows or call.too_long_at is not None
        return [t for t in targets if t.deployment_id not in given_up and (not check or call.fits(t))]

    def _by_weight(self, call, pool):
        if call.session is not None:
            return selection.sticky_choice(pool, call.session)
        return selection.choose(pool, self.rng)

    def _takes_traffic(self, deployment_id):
        """Return False while the deployment's circuit is open or it rests after a 503 with Retry-After."""
        if self.resting and self._resting(deployment_id):
            return False
        return self.breakers.available(deployment_id)

    def _resting(self, deployment_id):
        until = self.resting.get(deployment_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self.resting[deployment_id]
        return False

    async def pick_key(self, call, target):
        """Return a usable key of the target's provider within its limits, round-robin, or None.

        A cooling key's remaining wait is noted: it becomes the Retry-After when nothing else is left.
        """
        now = time.time()
        for position, key in self.keys.rotation(target):
            if key.id in call.refused_keys:
                continue
            if not self.keys.usable(key, now):
                cooling = self.keys.cooling_left(key, now)
                if cooling is not None:
                    call.limit_waits.append(cooling)
                continue
            if key.rpm_limit is not None or key.tpm_limit is not None:
                wait = await self.limits.provider_key(key, call.token_estimate() if key.tpm_limit else 0)
                if wait is not None:
                    call.limit_waits.append(wait)
                    continue
            self.keys.take(target, position)
            return key
        return None

    # --- the attempt loop ----------------------------------------------------------

    async def run(self, call, send):
        """Serve `call` until an answer was sent; raises GatewayError when every option failed."""
        target, retries = self.pick_target(call), 0
        while True:
            if target is None or len(call.tried) >= self.config.max_attempts:
                raise self.exhausted(call)
            held, failure, broken = target, None, None
            bounded = target.max_concurrency is not None  # only then a slot is taken: no cost for the others
            if bounded and not await self.slots.take(target, call.deadline):
                message = f"provider '{target.provider}' has its {target.max_concurrency} requests in flight"
                call.tried.append(Try(target, None, Outcome.NO_CAPACITY, None, 0.0, message))
                target, retries = self._fail_over(call, target)
                continue
            try:
                key = await self.pick_key(call, target)
                if key is None:
                    call.tried.append(Try(target, None, Outcome.NO_CAPACITY, None, 0.0, self._no_key_reason(call)))
                    target, retries = self._fail_over(call, held)
                    continue
                try:
                    broken = await self.attempt(call, target, key, send)
                except UpstreamError as err:
                    failure = err
            finally:
                if bounded:
                    self.slots.give_back(held)  # the slot taken above, even when `target` moved on
            if failure is None:
                if broken is not None:
                    await self.continue_stream(call, target, broken, send)
                return
            step = await self.after_failure(call, target, key, failure, retries)
            if step is Next.RELAY_ERROR:
                await self.pass_through(call, target, key, failure, send)
                return
            if step is not Next.RETRY and not self.budget.withdraw():  # a retry drew already; every attempt draws
                raise self.exhausted(call)
            if step is Next.RETRY:
                retries += 1
            elif step is Next.FAIL_OVER or step is Next.LARGER_WINDOW:
                target, retries = self._fail_over(call, target)
            # Next.ANOTHER_KEY: the same target; pick_key passes over the key just marked

    def _no_key_reason(self, call):
        if call.limit_waits:
            return "every key is rate-limited or over its limit"
        return "no usable key (invalid or disabled)"

    def _fail_over(self, call, target):
        call.given_up.add(target.deployment_id)
        return self.pick_target(call), 0

    async def after_failure(self, call, target, key, err, retries):
        """Return the Next step after a failed attempt (sleeping first when it is a retry)."""
        if err.outcome in DEPLOYMENT_FAILURES:
            self.breakers.failure(target.deployment_id, err.message)
        if err.too_long:  # the request's fault, not the deployment's; a larger window may hold it
            stated = stated_window(err.message)
            if stated is not None:
                self._window_stated(target, stated, err.message)
            call.too_long_at = max(call.too_long_at or 0, stated or 0, target.context_window or 0)
            return Next.LARGER_WINDOW
        if not err.retryable:
            return Next.RELAY_ERROR
        if err.outcome == Outcome.BAD_KEY:
            call.refused_keys.add(key.id)
            if self.keys.refused(key, call.request_id, err.message, may_confirm=not call.confirmed_a_key):
                call.confirmed_a_key = True
            return Next.ANOTHER_KEY
        if err.outcome == Outcome.RATE_LIMITED:
            return await self._after_429(call, target, key, err, retries)
        if not self.breakers.available(target.deployment_id):  # this failure opened its circuit: do not retry into it
            return Next.FAIL_OVER
        if err.status == 503 and err.retry_after is not None:
            return await self._after_503(call, target, err, retries)
        if err.outcome == Outcome.TIMEOUT:  # silent or slow: trying the same target again would cost another timeout
            return Next.FAIL_OVER
        if retries >= self.config.retries_per_target or not self.budget.withdraw():
            return Next.FAIL_OVER
        if not await self._sleep_within_deadline(call, backoff(retries + 1, self.rng)):
            return Next.FAIL_OVER
        return Next.RETRY

    def _window_stated(self, target, tokens, error):
        """Report the window a provider's error stated for `target`, once per new value."""
        if self.windows_stated.get(target.deployment_id) == tokens or self.on_window is None:
            return
        self.windows_stated[target.deployment_id] = tokens
        self.on_window(target, tokens, error)

    async def _after_429(self, call, target, key, err, retries):
        wait = err.retry_after if err.retry_after is not None else DEFAULT_COOLING_S
        self.keys.cool(key, min(wait, MAX_COOLING_S), err.message)
        now = time.time()
        if any(self.keys.usable(k, now) for k in target.keys if k is not key):
            return Next.ANOTHER_KEY
        return await self._wait_and_retry(call, wait, retries)

    async def _wait_and_retry(self, call, wait, retries):
        """RETRY after waiting out `wait` (a Retry-After) when it fits WEATHERVANE_GATEWAY_MAX_RETRY_WAIT, the
        target's retries, the retry budget and the deadline; else FAIL_OVER."""
        config = self.config
        if wait > config.max_retry_wait_s or retries >= config.retries_per_target or not self.budget.withdraw():
            return Next.FAIL_OVER
        # A little past the Retry-After, so the cooled key (or resting deployment) is usable again when we wake.
        if not await self._sleep_within_deadline(call, wait + 0.01):
            return Next.FAIL_OVER
        return Next.RETRY

    async def _after_503(self, call, target, err, retries):
        """Honour a 503's Retry-After as a 429's: the deployment rests that long in this process (at most the
        breaker's longest cooldown), and the request goes to another target, or waits it out when none is left
        and the wait fits (WEATHERVANE_GATEWAY_MAX_RETRY_WAIT, the deadline, the retry budget)."""
        wait = err.retry_after
        self.resting[target.deployment_id] = time.monotonic() + min(wait, self.config.breaker.max_cooldown_s)
        if any(t is not target and t.deployment_id not in call.given_up and self._takes_traffic(t.deployment_id)
               for t in (*call.route.targets, *call.route.fallbacks)):
            return Next.FAIL_OVER
        return await self._wait_and_retry(call, wait, retries)

    async def _sleep_within_deadline(self, call, seconds):
        """Sleep `seconds` unless that would outlast the deadline; return whether it slept."""
        loop = asyncio.get_running_loop()
        if loop.time() + seconds >= call.deadline:
            return False
        started = perf_counter()
        await asyncio.sleep(seconds)
        call.upstream_s += perf_counter() - started  # waiting is not the gateway's own time
        return True

    def exhausted(self, call):
        """Return the GatewayError for a request whose every option failed."""
        tried = call.tried
        if call.too_long_at is not None or (not tried and self._unfit(call)):
            return self.too_long(call)
        if not tried:
            message = f"The model '{call.route.name}' has no target with traffic."
            return GatewayError(503, message, "server_error", "no_target")
        summary = "; ".join(describe(t) for t in tried[-8:])
        outcomes = {t.outcome for t in tried}
        limited = call.limit_waits or Outcome.RATE_LIMITED in outcomes
        if outcomes <= {Outcome.RATE_LIMITED, Outcome.NO_CAPACITY} and limited:
            wait = min(call.limit_waits) if call.limit_waits else self._cooling_left(tried)
            return errors.rate_limited(f"Every upstream key of '{call.route.name}' is rate-limited or over its "
                                       f"limit. Tried: {summary}.", wait)
        if outcomes <= {Outcome.NO_CAPACITY}:
            message = f"No usable upstream for '{call.route.name}'. Tried: {summary}."
            return GatewayError(503, message, "server_error", "no_capacity")
        status, code = (504, "upstream_timeout") if tried[-1].outcome == Outcome.TIMEOUT else (502, "upstream_failed")
        message = f"Every upstream option failed after {len(tried)} attempts. Tried: {summary}."
        return GatewayError(status, message, "server_error", code)

    @staticmethod
    def _unfit(call):
        """Return the targets and fallbacks of the route whose context window cannot hold the request."""
        route = call.route
        if not route.windows:
            return []
        return [t for t in (*route.targets, *route.fallbacks) if not call.fits(t)]

    def too_long(self, call):
        """Return the 400 (OpenAI's context_length_exceeded) for a request no target's context window can hold."""
        prompt, wanted = call.context_need()
        route = call.route
        windows = [(t.context_window, t.deployment) for t in (*route.targets, *route.fallbacks) if t.context_window]
        largest = max(windows, default=None)
        refused = [t for t in call.tried if t.too_long]
        if refused:
            said = "; ".join(f"{t.target.deployment}: {t.error}" for t in refused[-4:])
            message = (f"The request is too long for every target of '{route.name}' that could take it ({said}), "
                       "and no other target has a larger context window.")
        else:
            message = (f"No target of '{route.name}' can hold this request: it needs about {prompt + wanted} tokens "
                       f"({prompt} in the messages, {wanted} in max_tokens), and the largest context window is "
                       f"{largest[0]} tokens ({largest[1]}). Shorten the messages or lower max_tokens.")
        param = "max_tokens" if largest is not None and wanted >= largest[0] else "messages"
        return GatewayError(400, message, "invalid_request_error", "context_length_exceeded", param)

    def _cooling_left(self, tried):
        now = time.time()
        waits = [self.keys.cooling_left(t.key, now) or 1.0 for t in tried if t.key is not None]
        return max(min(waits, default=1.0), 1.0)

    # --- one attempt -------------------------------------------------------------

    async def attempt(self, call, target, key, send, resume=None):
        """Send one upstream request (continuing the broken stream `resume` when given) and relay its answer.

        Returns a Continuation when the stream broke and may be continued, else None.
        Raises UpstreamError before anything (of this attempt) was relayed.
        """
        self.breakers.begin(target.deployment_id)
        started = perf_counter()
        response = None
        continuing = resume is not None
        body = call.body_for(target) if resume is None else resume.body_for(call, target)
        try:
            if call.stream:
                response, events, buffer = await open_stream(self.session, target, key, body, call.request_id)
                return await self.relay_stream(call, target, key, response, events, buffer, started, send, resume)
            response = await upstream.post(self.session, getattr(target, call.url_of), body, key.auth,
                                           target.timeout, call.request_id)
            if response.status >= 300:
                raise await upstream.failure(response, key.secret)
            await self.relay_body(call, target, key, response, started, send)
            return None
        except UpstreamError as err:
            call.upstream_s += perf_counter() - started
            call.tried.append(Try(target, key, err.outcome, err.status, (perf_counter() - started) * 1000, err.message,
                                  continuing, err.too_long))
            if key.tpm_limit is not None:  # a failed attempt used nothing: its reservation must not crowd out others
                await self.limits.release_tokens(key, call.token_estimate())
            raise
        except asyncio.CancelledError:  # the request's deadline struck, or the client left
            if not call.committed:
                call.upstream_s += perf_counter() - started
            call.tried.append(self._cut_short(call, target, key, (perf_counter() - started) * 1000, continuing))
            raise
        finally:
            if response is not None:
                response.release()  # back to the pool when fully read; closed otherwise

    def _cut_short(self, call, target, key, ms, continuing):
        """Return the Try of an attempt that was cancelled after `ms`.

        Only the gateway's own deadline is the deployment's timeout (a breaker failure); a deadline the client
        asked for, and any other cancellation (the client hung up, its server gave up on it), are the client's.
        """
        if not call.deadline_struck():
            return Try(target, key, Outcome.CLIENT_CLOSED, None, ms, "the client disconnected", continuing)
        if call.clients_deadline:
            return Try(target, key, Outcome.CLIENT_DEADLINE, None, ms, "the client's deadline passed", continuing)
        self.breakers.failure(target.deployment_id, "request deadline passed")
        return Try(target, key, Outcome.TIMEOUT, None, ms, "the request deadline passed", continuing)

    async def pass_through(self, call, target, key, err, send):
        """Send an upstream's non-retryable error (400, 404, 422, context length) to the client as it came."""
        call.finish(err.outcome, err.status, target, key.id, err.message)
        body = redact_bytes(err.body, (key.secret,)) if err.body else b""
        body = body or errors.error_body(err.message, "invalid_request_error", "upstream_error")
        content_type = (err.content_type or "application/json").encode("latin-1")
        headers = call.response_headers(target, content_type, len(body), unrecorded=0)
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _succeeded(self, call, target, key, attempt, usage):
        """Book a successful attempt: tokens, cost, breaker, key recovery, token-limit correction."""
        if usage is not None:
            attempt.tokens_in, attempt.tokens_out = usage
            attempt.cost = target.cost(*usage)
        call.finish(Outcome.OK, 200, target, key.id, attempt=attempt)
        call.tried.append(attempt)
        self.breakers.success(target.deployment_id)
        self.keys.answered(key)
        if key.tpm_limit is not None and usage is not None:
            self.limits.correct_tokens(key, call.token_estimate(), usage[0] + usage[1])

    async def relay_body(self, call, target, key, response, started, send):
        body = await upstream.read_all(response)
        ms = (perf_counter() - started) * 1000
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(Outcome.MALFORMED, "the upstream's answer is not JSON", True) from None
        problem = sse.error_of(payload)
        if problem is not None:
            raise UpstreamError(Outcome.SERVER_ERROR, f"the upstream answered 200 with an error: {problem}", True)
        usage = _checked_usage(payload)
        call.upstream_s += ms / 1000
        content_type = response.headers.get("Content-Type", "application/json").encode("latin-1")
        headers = call.response_headers(target, content_type, len(body))
        self._succeeded(call, target, key, Try(target, key, Outcome.OK, 200, ms), usage)
        if self.log_bodies:
            call.record.response_body = body.decode("utf-8", "replace")
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- streaming ------------------------------------------------------------------

    async def relay_stream(self, call, target, key, response, events, buffer, started, send, resume=None):
        """Relay a stream opened by `open_stream` (its first `events` and the rest of its `buffer`), the rest of
        the broken one `resume` when given; return a Continuation when it broke in a way the next target may
        finish, else None."""
        now = perf_counter()
        call.upstream_s += now - started
        cap = self.config.max_malformed_events
        if resume is None:
            headers = call.response_headers(target, None, None)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            call.committed = True
            relay = StreamRelay(call, target, key, started, cap)
        else:
            relay = ContinuationRelay(call, target, key, started, cap, resume)
        call.response = response
        outcome, problem = await relay.run(response, events, buffer, send)
        if outcome == Outcome.OK:
            call.stop_watching()  # before reading on: once the response is sent, receive() reports a "disconnect"
            await _read_to_end(response)
        attempt = self._finish_stream(call, target, key, relay, outcome, problem)
        if resume is not None and outcome == Outcome.OK:
            resume.add_to(call.record)
        return Continuation(relay, attempt, problem) if relay.resumable else None

    def _finish_stream(self, call, target, key, relay, outcome, problem):
        """Book a relayed stream's attempt and return its Try. A broken one that may be continued is charged
        the usage it reported, else an estimate (the prompt, and one token per chunk relayed): it was billed."""
        attempt = Try(target, key, outcome, 200, (perf_counter() - relay.started) * 1000, problem,
                      type(relay) is ContinuationRelay)
        attempt.ttft_ms, attempt.tps = relay.ttft_ms, relay.tokens_per_s()
        call.record.ttft_ms = relay.client_ttft_ms
        if outcome == Outcome.OK:
            self._succeeded(call, target, key, attempt, relay.usage)
            return attempt
        if relay.resumable:
            attempt.tokens_in, attempt.tokens_out = relay.usage or (call.context_need()[0], relay.content_chunks)
            attempt.cost = target.cost(attempt.tokens_in, attempt.tokens_out)
        call.finish(outcome, 200, target, key.id, problem)
        call.tried.append(attempt)
        if outcome in DEPLOYMENT_FAILURES:
            self.breakers.failure(target.deployment_id, problem)
        return attempt

    # --- continuing a broken stream (onto the targets the route's continue_streams allows) -----------

    async def continue_stream(self, call, failed, broken, send):
        """Finish the stream that broke on `failed` on the next target, from a prefill of what was relayed.

        One continuation per request, an extra attempt like a failover. When it
        cannot be made, is refused or fails before its first content, the
        stream ends with the error event as it would have without it.
        """
        call.record.continuation = await self._continue(call, failed, broken, send)
        if broken.relay.resumable:  # nothing has ended the client's stream yet
            await broken.relay.end_broken(send, broken.problem)

    async def _continue(self, call, failed, broken, send):
        """Return how the continuation went (Continued). Targets the route does not continue on (unverified,
        or seen refusing a prefill: snapshot.RouteInfo.no_continuation) are never sent one."""
        call.given_up.add(failed.deployment_id)
        call.given_up.update(call.route.no_continuation)
        target = self.pick_target(call)
        while target is not None and not call.client_gone:
            if len(call.tried) >= self.config.max_attempts or not self.breakers.available(target.deployment_id):
                break
            key = await self.pick_key(call, target)
            if key is not None:
                if not self.budget.withdraw():
                    break
                return await self._continue_on(call, target, key, broken, send)
            call.tried.append(Try(target, None, Outcome.NO_CAPACITY, None, 0.0, self._no_key_reason(call)))
            target, _ = self._fail_over(call, target)
        return Continued.UNAVAILABLE

    async def _continue_on(self, call, target, key, broken, send):
        call.record.continuation = Continued.FAILED  # should the deadline strike meanwhile
        try:
            await self.attempt(call, target, key, send, resume=broken)
        except UpstreamError as err:
            self._note_failure(call, target, key, err)
            return Continued.REFUSED if err.outcome == Outcome.CLIENT_ERROR else Continued.FAILED
        broken.relay.resumable = False  # the continuation's relay ended the stream: [DONE] or its own error event
        return Continued.ANSWERED if call.record.outcome == Outcome.OK else Continued.FAILED

    def _note_failure(self, call, target, key, err):
        """Book a failed attempt that is not followed by another: the breaker, a refused or cooling key."""
        if err.outcome in DEPLOYMENT_FAILURES:
            self.breakers.failure(target.deployment_id, err.message)
        if err.outcome == Outcome.BAD_KEY:
            self.keys.refused(key, call.request_id, err.message, may_confirm=not call.confirmed_a_key)
        elif err.outcome == Outcome.RATE_LIMITED:
            wait = err.retry_after if err.retry_after is not None else DEFAULT_COOLING_S
            self.keys.cool(key, min(wait, MAX_COOLING_S), err.message)


async def open_stream(session, target, key, body, request_id):
    """Send a streamed chat request and read it up to its first content; return (response, events, rest).

    Connecting, the headers and the events before the first content must all
    fit the target's first-token timeout (a role-only chunk does not count),
    so a silent upstream fails over as soon as a slow first token does.
    Nothing has reached the client yet: every failure here may still fail
    over. Raises UpstreamError (the response, if any, closed).
    """
    response = None
    try:
        async with asyncio.timeout(target.first_token_timeout):
            response = await upstream.post(session, target.chat_url, body, key.auth, target.stream_timeout,
                                           request_id)
            if response.status >= 300:
                raise await upstream.failure(response, key.secret)
            events, buffer = await _first_events(response)
            return response, events, buffer
    except TimeoutError:
        if response is not None:
            response.close()
        raise UpstreamError(Outcome.TIMEOUT, f"no first token within {target.first_token_timeout:g} s",
                            True) from None
    except BaseException:
        if response is not None:
            response.close()
        raise


async def _first_events(response):
    """Read until the first content event (or the stream's end); return (events, rest). Raises UpstreamError."""
    buffer, held = b"", []
    opening = StreamReader()  # the same rules as the relay's reader, for the events before the commit
    while True:
        chunk = await upstream.read_chunk(response)
        if not chunk:
            if held:
                return held, buffer  # a stream with no content at all: relayed, and judged, as it is
            raise UpstreamError(Outcome.TRUNCATED, "the stream ended before its first event", True)
        events, buffer = sse.split_events(buffer + chunk)
        held.extend(events)
        if _opens_the_answer(opening, events):
            return held, buffer


def _opens_the_answer(reader, events):
    """Return True once `events` brought content, a finish or [DONE]. Raises UpstreamError (retryable: nothing
    was relayed) for an error event or a malformed start."""
    for event in events:
        reader.take(sse.event_data(event))
        if reader.problem is not None:
            raise UpstreamError(*reader.problem, True)
        if reader.started:
            return True
    return False


def describe(attempt):
    """Return one attempt as the error messages list it: deployment, key label (never the secret), outcome."""
    key = f" with key '{attempt.key.label}'" if attempt.key is not None else ""
    return f"{attempt.target.deployment}{key}: {attempt.outcome} ({attempt.error})"


def _checked_usage(payload):
    """Return the answer's (prompt, completion) tokens, or None. Raises UpstreamError (malformed, retryable)
    when its usage is not token counts: before the first byte, that answer fails over like any malformed one."""
    try:
        return sse.usage_of(payload)
    except sse.Malformed as bad:
        raise UpstreamError(Outcome.MALFORMED, str(bad), True) from None


async def _read_to_end(response):
    """Consume what follows [DONE] (the chunked terminator), so the connection can be reused."""
    try:
        for _ in range(3):
            if response.content.at_eof() or not await response.content.readany():
                return
    except Exception:  # the answer is complete; a bad ending only costs the connection
        response.close()


DONE_EVENT = b"data: [DONE]\n\n"


class StreamRelay:
    """Forwards whole SSE events from a committed stream; ends a broken one with an error event.

    A malformed event is skipped and counted, up to `max_malformed`; one more
    breaks the stream. A stream that ends cleanly after its finish_reason (and
    its usage, when the client asked for it) but without [DONE] is completed
    with [DONE]: the answer is whole. Both repairs are noted on the record.
    """

    __slots__ = ("call", "target", "key", "started", "reader", "ttft_ms", "client_ttft_ms", "first_content",
                 "strip_usage", "kept", "stamp", "resumable")

    def __init__(self, call, target, key, started, max_malformed=3):
        self.call, self.target, self.key, self.started = call, target, key, started
        self.reader = StreamReader(call.wants_usage, max_malformed)  # what the stream means: routing.streams
        self.resumable = False
        self.ttft_ms = self.client_ttft_ms = self.first_content = None
        self.strip_usage = not call.wants_usage
        # The text relayed so far, kept only on routes that continue broken streams (None: not kept).
        self.kept = [] if call.route.continue_streams and _one_choice(call.request) else None
        self.stamp = None  # the id, model and created fields the client saw

    def _select(self, events):
        """Return (bytes to forward, problem): the events up to [DONE], or up to the first
        error event (or malformed one past the cap), whose (outcome, message) is then the problem."""
        out, reader = [], self.reader
        for event in events:
            payload = reader.take(sse.event_data(event))
            if reader.problem is not None:
                return b"".join(out), reader.problem
            if payload is SKIPPED:
                self.call.record.notes += (Note.MALFORMED_SKIPPED,)
                continue
            if type(payload) is dict:
                if self.first_content is None and reader.first_content_at is not None:
                    self._first_token(reader.first_content_at)
                if self.kept is not None:
                    self._keep(payload)
                if self.strip_usage and sse.is_usage_only(payload):
                    continue
            elif payload is sse.DONE:
                out.append(event)
                break
            out.append(event)
        return (out[0] if len(out) == 1 else b"".join(out)), None

    def _keep(self, payload):
        """Keep the text of a chunk about to be relayed; a turn a prefill cannot carry (tool calls,
        a refusal, several choices) stops keeping it, so it is not continued."""
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") if type(choice) is dict else None
            if not delta:
                continue
            content = delta.get("content")
            if choice.get("index", 0) != 0 or delta.get("tool_calls") or delta.get("refusal") or (
                    content is not None and type(content) is not str):
                self.kept = None
                return
            if content:
                if self.stamp is None:
                    self.stamp = {name: payload[name] for name in STAMP_FIELDS if name in payload}
                self.kept.append(content)

    def _first_token(self, now):
        self.first_content = now
        self.ttft_ms = (now - self.started) * 1000
        self.client_ttft_ms = (now - self.call.t0) * 1000

    @property
    def usage(self):
        return self.reader.usage

    @property
    def content_chunks(self):
        return self.reader.content_chunks

    @property
    def finished(self):
        return bool(self.reader.finish_reason)

    async def run(self, response, events, buffer, send):
        """Relay until [DONE] or a failure; return (outcome, problem)."""
        reader = self.reader
        try:
            while True:
                data, problem = self._select(events)
                if reader.done:  # [DONE] and the end of the body in one write: clients stop reading at [DONE]
                    await send({"type": "http.response.body", "body": data})
                    return Outcome.OK, ""
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if problem is not None:
                    return await self._broken(send, *problem)
                chunk = await upstream.read_chunk(response)
                if not chunk:
                    return await self._ended(send, *reader.end())
                events, buffer = sse.split_events(buffer + chunk)
        except UpstreamError as err:
            return await self._ended(send, *reader.broke(err.outcome, err.message))

    async def _ended(self, send, outcome, problem):
        """Finish a stream whose upstream body ended without [DONE]: a whole answer gets the [DONE] it lacked."""
        if self.call.client_gone:
            return Outcome.CLIENT_CLOSED, "the client disconnected"
        if outcome != Outcome.OK:
            return await self._broken(send, outcome, problem)
        self.call.record.notes += (Note.DONE_ADDED,)
        await send({"type": "http.response.body", "body": DONE_EVENT})
        return Outcome.OK, ""

    async def _broken(self, send, outcome, problem):
        if self.kept and not self.finished and not self.call.client_gone:
            self.resumable = True  # Proxy.continue_stream ends the stream, one way or the other
            return outcome, problem
        await self.end_broken(send, problem)
        return outcome, problem

    async def end_broken(self, send, problem):
        """Send the error event that ends a broken stream (no [DONE] follows)."""
        message = f"The upstream stream broke after it started: {problem}. The answer is incomplete."
        await send({"type": "http.response.body", "body": errors.sse_error_event(message)})

    def tokens_per_s(self):
        if self.usage is None or self.first_content is None:
            return None
        elapsed = perf_counter() - self.first_content
        return self.usage[1] / elapsed if elapsed > 0 and self.usage[1] else None


STAMP_FIELDS = ("id", "model", "created", "system_fingerprint")


def _one_choice(request):
    """Return True when the request asks for one answer (n absent or 1): only one can be prefilled."""
    n = request.get("n")
    return n is None or n == 1


class ContinuationRelay(StreamRelay):
    """Relays the continuation of a broken stream into the same client stream.

    Its chunks are restamped with the id, model and created fields the client
    already saw, its opening role-only chunk is dropped, and it is never
    continued again: if it breaks too, its own error event ends the stream.
    Before its first event the client gets an SSE comment naming the
    continuing deployment (`: x-weathervane-continued-by: <name>`: the
    headers, sent before the break, name the first one), and its usage chunk
    carries the sum of both attempts' usage (the broken one's as charged).
    """

    __slots__ = ("earlier", "own_usage", "announce")

    def __init__(self, call, target, key, started, max_malformed, broken):
        super().__init__(call, target, key, started, max_malformed)
        self.kept = None
        self.stamp = broken.relay.stamp
        self.client_ttft_ms = broken.relay.client_ttft_ms
        self.earlier = broken.attempt  # the broken attempt's Try, with the usage it was charged
        self.own_usage = None  # the continuing target's own (prompt, completion) tokens, as it reported them
        self.announce = CONTINUED_BY % target.deployment.encode()

    @property
    def usage(self):
        return self.own_usage

    def _first_token(self, now):
        self.first_content = now
        self.ttft_ms = (now - self.started) * 1000

    def _select(self, events):
        data, problem = super()._select([event for event in map(self._restamp, events) if event is not None])
        if data and self.announce:
            data, self.announce = self.announce + data, None
        return data, problem

    def _restamp(self, event):
        """Return the event as the client's stream carries it, or None to drop it."""
        try:
            payload = sse.parse(sse.event_data(event))
            usage = sse.usage_of(payload)
        except sse.Malformed:
            return event  # skipped and counted, or judged malformed, by _select
        if type(payload) is not dict or "error" in payload:
            return event
        if sse.is_role_only(payload):
            return None
        payload.update(self.stamp)
        if usage is not None:
            self.own_usage = usage
            payload["usage"] = self._summed(payload["usage"], usage)
        return sse.event(payload)

    def _summed(self, reported, usage):
        """Return the usage object the client gets: both attempts' tokens (other fields as reported)."""
        prompt = usage[0] + self.earlier.tokens_in
        completion = usage[1] + self.earlier.tokens_out
        return {**reported, "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}


CONTINUED_BY = b": x-weathervane-continued-by: %s\n\n"


class Continuation:
    """A stream that broke after content reached the client, to be finished by the next target.

    `body_for` is the original request plus an assistant message holding the
    text relayed so far (a prefill); max_tokens is lowered by the chunks
    relayed (about one token each), so the whole answer keeps the client's cap.
    `attempt` is the broken attempt's Try (its usage as charged).
    """

    __slots__ = ("relay", "attempt", "problem", "text", "chunks")

    def __init__(self, relay, attempt, problem):
        self.relay, self.attempt, self.problem = relay, attempt, problem
        self.text = "".join(relay.kept)
        self.chunks = len(relay.kept)

    def add_to(self, record):
        """Add the broken attempt's usage to a request record the continuation answered: it pays for both."""
        record.tokens_in += self.attempt.tokens_in
        record.tokens_out += self.attempt.tokens_out
        record.cost += self.attempt.cost

    def body_for(self, call, target):
        request = dict(call.request, model=target.upstream_model, stream=True)
        request["messages"] = [*call.request["messages"], {"role": "assistant", "content": self.text}]
        options = call.request.get("stream_options")
        request["stream_options"] = {**(options if type(options) is dict else {}), "include_usage": True}
        for name in ("max_tokens", "max_completion_tokens"):
            limit = request.get(name)
            if type(limit) is int:
                request[name] = max(limit - self.chunks, 1)
        return orjson.dumps(request)
