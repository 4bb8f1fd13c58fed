"""The gateway as a raw ASGI application (no Django request handling: it costs
~0.9 ms of CPU per request, more than this whole hot path).

    POST /v1/chat/completions   JSON or SSE (stream_options.include_usage honoured)
    POST /v1/embeddings         passed through
    GET  /v1/models[/<id>]      the routes this gateway key may use
    GET  /metrics               Prometheus
    GET  /livez, /readyz, /health   liveness and readiness (health.py)

A request is authenticated by the SHA-256 of its bearer token, counted
against its key's limit, parsed once with orjson, resolved to a route in the
in-memory snapshot, and handed to `proxy.Proxy`. Every response carries
x-request-id, x-weathervane-route, x-weathervane-deployment,
x-weathervane-attempts and x-weathervane-overhead-ms (and
x-weathervane-fallback when a fallback answered). `mount()` puts it in
front of Django for the embedded single process.
"""

import asyncio
import hashlib
import itertools
import logging
import math
import random
import re
import secrets
from dataclasses import dataclass, field, replace
from time import perf_counter

import orjson
from django.conf import settings
from django.db import InterfaceError, OperationalError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from routing.gateway import errors, health, upstream
from routing.gateway.breaker import BreakerPolicy, Breakers
from routing.gateway.disconnect import ClientWatches
from routing.gateway.errors import GatewayError
from routing.gateway.keys import KeyRing
from routing.gateway.limits import Limits
from routing.gateway.metrics import scrape_allowed
from routing.gateway.proxy import NOSNIFF, Call, Proxy, common_headers, describe, finish
from routing.gateway.recorder import Record, Recorder
from routing.gateway.retry import RetryBudget
from routing.gateway.shadow import Shadows
from routing.gateway.snapshot import SnapshotStore, with_learned_window
from routing.gateway.trials import Trials
from routing.models import WindowSource
from routing.outcomes import Outcome

log = logging.getLogger(__name__)

JSON_TYPE = b"application/json"
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,100}")  # fullmatch: "$" would let a trailing newline through
MODELS_PREFIX = "/v1/models/"
CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request": logged for a request that left before any answer


@dataclass(frozen=True)
class GatewayConfig:
    """Knobs of one gateway instance; `from_settings()` reads dashboard/settings.py."""

    deadline_s: float = 120.0
    max_body: int = 4 * 1024 * 1024
    retries_per_target: int = 1
    max_attempts: int = 6
    retry_budget: float = 0.2
    max_retry_wait_s: float = 10.0
    max_malformed_events: int = 3
    flush_interval_s: float = 5.0
    log_sample: float = 0.01
    log_bodies: bool = False
    poll_s: float = 1.0
    redis_url: str = ""
    limits_prefix: str = "weathervane"
    redis_timeout_s: float = 0.05
    limits_recheck_s: float = 2.0
    concurrency_wait_s: float = 0.5
    local_notices: bool = True
    shadow_max_in_flight: int = 8
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)

    @classmethod
    def from_settings(cls, **overrides):
        s = settings
        config = cls(
            deadline_s=s.GATEWAY_DEADLINE_S, max_body=s.GATEWAY_MAX_BODY_BYTES,
            retries_per_target=s.GATEWAY_RETRIES_PER_TARGET,
            max_attempts=s.GATEWAY_MAX_ATTEMPTS, retry_budget=s.GATEWAY_RETRY_BUDGET,
            max_retry_wait_s=s.GATEWAY_MAX_RETRY_WAIT_S,
            max_malformed_events=s.GATEWAY_MAX_MALFORMED_EVENTS,
            flush_interval_s=s.GATEWAY_FLUSH_INTERVAL_S, log_sample=s.GATEWAY_LOG_SUCCESS_SAMPLE,
            log_bodies=s.GATEWAY_LOG_BODIES,
            poll_s=s.GATEWAY_SNAPSHOT_POLL_S, redis_url=s.REDIS_URL, limits_prefix=s.GATEWAY_LIMITS_PREFIX,
            redis_timeout_s=s.REDIS_TIMEOUT_S, concurrency_wait_s=s.GATEWAY_CONCURRENCY_WAIT_S,
            shadow_max_in_flight=s.GATEWAY_SHADOW_MAX_IN_FLIGHT,
            breaker=BreakerPolicy(consecutive=s.GATEWAY_BREAKER_FAILURES, cooldown_s=s.GATEWAY_BREAKER_COOLDOWN_S,
                                  max_cooldown_s=max(s.GATEWAY_BREAKER_MAX_COOLDOWN_S, s.GATEWAY_BREAKER_COOLDOWN_S)),
        )
        return replace(config, **overrides)


def _read_headers(scope):
    """Return (authorization, content-length, session id, request id, deadline) as bytes or None."""
    auth = length = session = request_id = deadline = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            auth = value
        elif name == b"content-length":
            length = value
        elif name == b"x-session-id" or name == b"x-weathervane-session":
            session = value
        elif name == b"x-request-id":
            request_id = value
        elif name == b"x-weathervane-deadline":
            deadline = value
    return auth, length, session, request_id, deadline


def parse_request(raw, url_of):
    """Return the request body as a dict. Raises GatewayError (400) naming what is wrong."""
    if not raw:
        raise errors.bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if type(request) is not dict:
        raise errors.bad_request("The request body must be a JSON object.", code="invalid_json")
    model = request.get("model")
    if type(model) is not str or not model:
        raise errors.bad_request("'model' is required and must be the name of a model.", "model", "invalid_value")
    if url_of == "chat_url":
        _check_chat(request)
    elif request.get("input") is None:
        raise errors.bad_request("'input' is required: a string or a list of them.", "input", "invalid_value")
    return request


def _check_chat(request):
    messages = request.get("messages")
    if type(messages) is not list or not messages:
        raise errors.bad_request("'messages' must be a non-empty list of messages.", "messages", "invalid_value")
    if request.get("stream") is not None and type(request["stream"]) is not bool:
        raise errors.bad_request("'stream' must be true or false.", "stream", "invalid_value")
    options = request.get("stream_options")
    if options is not None and type(options) is not dict:
        raise errors.bad_request("'stream_options' must be an object.", "stream_options", "invalid_value")


class Gateway:
    """The ASGI app. One instance per process (uvicorn worker or the embedded Daphne)."""

    def __init__(self, config=None, rng=None):
        self.config = config = config or GatewayConfig.from_settings()
        self.rng = rng or random.Random()
        self.recorder = Recorder(config.flush_interval_s, config.log_sample, config.log_bodies, rng=self.rng)
        self.store = SnapshotStore(config.poll_s, config.redis_url, config.local_notices, on_swap=self._on_swap)
        self.recorder.metrics.dependencies = lambda: health.dependencies(self)
        self.breakers = Breakers(config.breaker, on_change=self.recorder.circuit_changed)
        self.budget = RetryBudget(ratio=config.retry_budget)
        self.keys = KeyRing(self.recorder)
        self.trials = Trials(self.breakers, self.keys, self.store, self.recorder.metrics)
        self.limits = None
        self.session = None
        self.proxy = Proxy(config, self.keys, self.breakers, self.budget, self.rng, config.log_bodies)
        self.proxy.on_window = self._window_stated
        self.recorder.metrics.concurrency = self.proxy.slots
        self.shadows = Shadows(self.proxy, self.recorder, self.rng, config.shadow_max_in_flight, config.deadline_s)
        self.watches = ClientWatches()
        self.started = False
        self.loop = None
        self._start_lock = None
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.paths = {"/v1/chat/completions": self.chat, "/v1/embeddings": self.embeddings, "/v1/models": self.models,
                      "/metrics": self.metrics}

    # --- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if scope["path"] in health.PATHS:  # before the start: liveness must answer while the snapshot loads
                await health.answer(self, scope, send)
                return
            if not self.started:
                await self.start()
            handler = self.paths.get(scope["path"])
            if handler is None:
                handler = self.model if scope["path"].startswith(MODELS_PREFIX) else self.unknown_path
            await handler(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send):
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self):
        """Load the first snapshot (in a thread) and start the background threads; idempotent."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self.started:
                return
            self.loop = asyncio.get_running_loop()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.store.load)
            except (OperationalError, InterfaceError) as exc:  # the database is down: the refresher keeps trying
                self.store.database.failed(exc)
            except Exception:  # e.g. not migrated yet: serve nothing, the refresher keeps trying
                log.exception("gateway could not load its first config snapshot")
            self.session = upstream.new_session()
            config = self.config
            self.limits = Limits(config.redis_url or None, config.limits_prefix, config.redis_timeout_s,
                                 config.limits_recheck_s, self.recorder.metrics)
            self.proxy.start(self.session, self.limits)
            self.trials.start(self.session)
            self.store.start()
            self.recorder.start()
            self.started = True

    def close(self):
        """Stop the background threads after a last flush; for servers without lifespan events (Daphne).

        Called once the server's loop has stopped, so nothing it collected is lost on a clean stop.
        """
        self.store.stop()
        self.recorder.stop()

    async def stop(self):
        if not self.started:
            return
        self.started = False
        self.shadows.cancel()
        self.trials.cancel()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.store.stop)
        await loop.run_in_executor(None, self.recorder.stop)
        await self.limits.close()
        await self.session.close()

    # --- config snapshot and key state ---------------------------------------------

    def _on_swap(self, previous, snapshot):
        """Adopt a new snapshot's names, key states and circuits (runs in the refresher thread)."""
        self.keys.adopt(snapshot)
        self.proxy.windows_stated.clear()  # a changed deployment may state its window anew
        self.recorder.deployment_names = snapshot.deployments
        self.recorder.route_names = {route.id: name for name, route in snapshot.routes.items()}
        self.recorder.metrics.snapshot_version = snapshot.version
        if snapshot.circuits and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.breakers.adopt, snapshot.circuits)

    def _window_stated(self, target, tokens, error):
        """A provider's context-length error stated `target`'s window: save it (off the hot path) and, unless
        a typed window rules, use it in this process at once, so the next request too long for it skips it."""
        self.recorder.window_learned(target.deployment_id, tokens, error)
        if target.window_source != WindowSource.TYPED:
            self.store.patch(lambda current: with_learned_window(current, target.deployment_id, tokens))

    # --- responses -------------------------------------------------------------------

    def _request_id(self, given):
        if given is not None and SAFE_REQUEST_ID.fullmatch(given):
            return given.decode()
        return f"req_{self._id_prefix}{next(self._ids):x}"

    async def send_error(self, send, err, request_id, route, deployment, attempts, overhead):
        body = err.body()
        headers = common_headers(request_id, route, deployment, attempts, overhead)
        headers += [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()), *err.headers]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # --- endpoints ---------------------------------------------------------------------

    async def chat(self, scope, receive, send):
        await self._proxy(scope, receive, send, "chat_url")

    async def embeddings(self, scope, receive, send):
        await self._proxy(scope, receive, send, "embeddings_url")

    def _authenticate(self, snapshot, auth):
        """Return the ClientKey of the bearer token. Raises GatewayError (401)."""
        if auth is None:
            raise errors.unauthorized(missing=True)
        scheme, _, token = auth.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            raise errors.unauthorized(missing=True)
        client = snapshot.client_keys.get(hashlib.sha256(token).hexdigest())
        if client is None:
            raise errors.unauthorized(missing=False)
        return client

    async def _admit(self, scope, receive, snapshot, headers, record, url_of):
        """Authenticate, count, read and parse; return (client key, route, request, raw body)."""
        auth, length, _, _, _ = headers
        if scope["method"] != "POST":
            raise errors.method_not_allowed("POST")
        client = self._authenticate(snapshot, auth)
        record.client_key_id = client.id
        if client.rpm_limit is not None:
            wait = await self.limits.client_key(client)
            if wait is not None:
                message = f"This gateway key is over its limit of {client.rpm_limit} requests per minute."
                raise errors.rate_limited(message, wait)
        raw = await self._read_body(receive, length)
        request = parse_request(raw, url_of)
        route = snapshot.routes.get(request["model"])
        if route is None:
            raise errors.unknown_model(request["model"], snapshot.routes_for(client))
        if not client.may_use(route.name):
            raise errors.route_not_allowed(route.name)
        return client, route, request, raw

    async def _read_body(self, receive, length):
        limit = self.config.max_body
        if length is not None and (not length.isdigit() or int(length) > limit):
            if length.isdigit():
                raise errors.too_large(limit)
            raise errors.bad_request("Content-Length must be a number.")
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise errors.too_large(limit)
            return body
        parts, size = [body], len(body)
        while message.get("more_body"):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _deadline(self, given):
        """Return (loop time of the deadline, whether it is the client's own: shorter than the gateway's)."""
        seconds = self.config.deadline_s
        if given is not None:
            try:
                asked = max(float(given), 0.1)
            except ValueError:
                asked = math.inf
            if asked < seconds:
                return asyncio.get_running_loop().time() + asked, True
        return asyncio.get_running_loop().time() + seconds, False

    async def _proxy(self, scope, receive, send, url_of):
        t0 = perf_counter()
        headers = _read_headers(scope)
        request_id = self._request_id(headers[3])
        snapshot = self.store.current
        record = Record(request_id)
        call = None
        try:
            client, route, request, raw = await self._admit(scope, receive, snapshot, headers, record, url_of)
            record.route_id, record.route = route.id, route.name
            session = headers[2].decode("latin-1") if headers[2] and route.sticky else None
            deadline, clients = self._deadline(headers[4])
            call = Call(t0, request_id, route, request, raw, url_of, session, deadline, record, clients)
            record.stream = call.stream
            if self.config.log_bodies:
                record.request_body = request
            self.budget.deposit()
            await self._serve(call, send, receive)
        except GatewayError as err:
            await self._refuse(send, err, call, record, t0)
        finally:
            record.latency_ms = (perf_counter() - t0) * 1000
            self.recorder.record(record)
            if call is not None and call.route.shadow is not None:  # a rollout's shadow step: off the client's path
                self.shadows.maybe_mirror(call)

    async def _serve(self, call, send, receive):
        call.watch = self.watches.watch(receive, call)
        try:
            async with asyncio.timeout_at(call.deadline) as call.timeout:
                await self.proxy.run(call, send)
        except TimeoutError:
            call.stop_watching()
            if not call.committed:
                raise self._deadline_error(call) from None
            await self._end_late_stream(call, send)
        except asyncio.CancelledError:
            _client_left(call)
            if not call.watch.cancelled_the_task():  # a cancellation from outside (e.g. Daphne's) goes on
                raise
        finally:
            call.stop_watching()

    def _deadline_error(self, call):
        summary = "; ".join(describe(t) for t in call.tried[-8:]) or "nothing answered"
        if call.clients_deadline:
            return GatewayError(504, f"No answer within the deadline this request asked for (x-weathervane-deadline). "
                                f"Tried: {summary}.", "server_error", "client_deadline_exceeded")
        seconds = self.config.deadline_s
        return GatewayError(504, f"No answer within the request deadline ({seconds:g} s). Tried: {summary}.",
                            "server_error", "deadline_exceeded")

    async def _end_late_stream(self, call, send):
        """The deadline struck mid-stream: end it with an error event (no [DONE])."""
        last = call.tried[-1] if call.tried else None
        outcome = Outcome.CLIENT_DEADLINE if call.clients_deadline else Outcome.TIMEOUT
        call.finish(outcome, 200, last and last.target, last and last.key and last.key.id,
                    "request deadline exceeded mid-stream")
        message = "The request deadline passed while the answer was streaming. The answer is incomplete."
        try:
            event = errors.sse_error_event(message, code="deadline_exceeded")
            await send({"type": "http.response.body", "body": event})
        except RuntimeError:  # the response had already ended
            pass
        if call.response is not None:
            call.response.close()

    async def _refuse(self, send, err, call, record, t0):
        last = call.tried[-1] if call is not None and call.tried else None
        finish(record, _refusal_outcome(err, last), err.status, last and last.target, None, err.message[:500])
        attempts = call.attempts() if call is not None else 0
        overhead = (perf_counter() - t0 - (call.upstream_s if call is not None else 0.0)) * 1000
        record.overhead_ms = overhead
        await self.send_error(send, err, record.request_id, record.route, "", attempts, overhead)

    async def models(self, scope, receive, send):
        await self._list(scope, send, None)

    async def model(self, scope, receive, send):
        await self._list(scope, send, scope["path"][len(MODELS_PREFIX):])

    async def _list(self, scope, send, model_id):
        t0 = perf_counter()
        headers = _read_headers(scope)
        request_id = self._request_id(headers[3])
        snapshot = self.store.current
        try:
            if scope["method"] != "GET":
                raise errors.method_not_allowed("GET")
            client = self._authenticate(snapshot, headers[0])
            names = snapshot.routes_for(client)
            if model_id is None:
                body = orjson.dumps({"object": "list", "data": [_model_entry(n) for n in names]})
            elif model_id in names:
                body = orjson.dumps(_model_entry(model_id))
            else:
                raise errors.unknown_model(model_id, names)
        except GatewayError as err:
            await self.send_error(send, err, request_id, "", "", 0, (perf_counter() - t0) * 1000)
            return
        out = common_headers(request_id, "", "", 0, (perf_counter() - t0) * 1000)
        out += [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": body})

    async def metrics(self, scope, receive, send):
        if not await scrape_allowed(scope):
            await self.send_error(send, errors.metrics_unauthorized(), self._request_id(None), "", "", 0, 0.0)
            return
        body = generate_latest(self.recorder.metrics.registry)
        headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()), (b"content-length", str(len(body)).encode()),
                   NOSNIFF]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def unknown_path(self, scope, receive, send):
        headers = _read_headers(scope)
        await self.send_error(send, errors.not_found(scope["path"]), self._request_id(headers[3]), "", "", 0, 0.0)


def _model_entry(name):
    return {"id": name, "object": "model", "created": 0, "owned_by": "weathervane"}


def _client_left(call):
    """Book a request cancelled before its deadline as the client's: it hung up (or its server gave up on it)."""
    last = call.tried[-1] if call.tried else None
    status = 200 if call.committed else CLIENT_CLOSED_STATUS
    call.finish(Outcome.CLIENT_CLOSED, status, last and last.target, last and last.key and last.key.id,
                "the client disconnected")
    call.record.overhead_ms = call.overhead_ms()


def _refusal_outcome(err, last):
    """Return the outcome of a request the gateway answered itself (`last`: its last attempt, if any)."""
    if err.code == "client_deadline_exceeded":
        return Outcome.CLIENT_DEADLINE
    if err.code == "deadline_exceeded":
        return Outcome.TIMEOUT
    if last is not None:
        return last.outcome
    return Outcome.NO_CAPACITY if err.status in (502, 503, 504) else Outcome.REJECTED


ROOT_PATHS = frozenset(("/metrics", *health.PATHS))


def mount(django_app, gateway=None):
    """Return an ASGI app that sends /v1/…, /metrics and the health paths to the gateway and the rest to Django.

    Lifespan events start and stop the gateway (Django has none); servers
    without lifespan (Daphne) start it on the first request instead.
    """
    gateway = gateway or Gateway()

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            await gateway.lifespan(receive, send)
        elif scope["type"] == "http" and (scope["path"].startswith("/v1/") or scope["path"] in ROOT_PATHS):
            await gateway(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    app.gateway = gateway
    return app
