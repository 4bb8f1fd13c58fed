"""What the gateway saw, recorded off the hot path.

Once its response is sent, a request's `Record` is folded in memory into
Prometheus metrics, per-deployment, per-key, per-minute rollup deltas
(probes.rollups; one entry per upstream attempt, so a canary that failed
over still shows its errors) and the sampled request log (every failure, a
share of successes, bodies only when enabled). No database work happens per
request: the flusher thread writes the deltas, the log rows,
`GatewayKey.last_used_at` and the state changes the gateway decided (keys
invalid or cooling, circuits; each with its Event, an audit row where a
person would expect one, and a live timeline push) every
GATEWAY_FLUSH_INTERVAL_S; so is a context window a provider's error stated
(`Deployment.learn_window`).
"""

import logging
import random
import threading
import time
from collections import deque
from datetime import UTC, datetime, timedelta

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
    reset_queries,
    transaction,
)
from django.utils import timezone

from dashboard import live
from dashboard.outages import OutageLog
from probes import rollups
from probes.models import Source
from routing.gateway import snapshot
from routing.gateway.metrics import Metrics
from routing.models import (
    ApiKey,
    CircuitState,
    Deployment,
    DeploymentCircuit,
    Event,
    EventKind,
    GatewayKey,
    KeyState,
    RequestLog,
)
from routing.outcomes import Outcome, storable

log = logging.getLogger(__name__)

MAX_LOG_ROWS_PER_FLUSH = 1000  # failures of authenticated traffic
MAX_SAMPLED_ROWS_PER_FLUSH = 200  # sampled successes: never crowd out a failure
ACTOR = "system:gateway"
# Not held against a deployment in its rollups: no upstream call was made, or the client left or gave up.
NOT_THE_DEPLOYMENTS = frozenset({Outcome.NO_CAPACITY, Outcome.CLIENT_CLOSED, Outcome.CLIENT_DEADLINE})
def _storable_json(value):
    """Return a JSON value with NULs removed from every string (PostgreSQL's jsonb refuses \\u0000)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable_json(k): _storable_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable_json(v) for v in value]
    return value


class Record:
    """One finished request; `tried` holds one proxy.Try per upstream attempt."""

    __slots__ = ("at", "request_id", "route_id", "route", "client_key_id", "deployment_id", "deployment", "key_id",
                 "outcome", "status", "stream", "tried", "latency_ms", "ttft_ms", "overhead_ms", "tokens_in",
                 "tokens_out", "cost", "error", "request_body", "response_body", "notes", "continuation",
                 "fallback")

    def __init__(self, request_id, route_id=None, route="", client_key_id=None):
        self.at = time.time()
        self.request_id = request_id
        self.route_id = route_id
        self.route = route
        self.client_key_id = client_key_id
        self.deployment_id = self.deployment = self.key_id = None
        self.outcome = Outcome.OK
        self.status = 200
        self.stream = False
        self.tried = []
        self.latency_ms = self.ttft_ms = self.overhead_ms = None
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.error = ""
        self.request_body = self.response_body = None
        self.notes = ()  # repairs of an answer that still succeeded (proxy.Note); a tuple: none is the rule
        self.continuation = None  # how a broken stream's continuation ended (proxy.Continued), if one was tried
        self.fallback = ""  # the fallback deployment that served, when one did


class Recorder:
    """Collects Records and state changes; a thread flushes them to the database."""

    def __init__(self, flush_interval_s, log_sample, log_bodies=False, deployment_names=None, rng=None):
        self.flush_interval_s = flush_interval_s
        self.log_sample = log_sample
        self.log_bodies = log_bodies
        self.metrics = Metrics()
        self.database = OutageLog(log, "The database", "the gateway's rollup and request-log writes")
        self.changes = deque()
        self.aggregator = rollups.Aggregator(Source.TRAFFIC)
        self.shadows = rollups.Aggregator(Source.SHADOW)  # a shadow step's mirrored requests, both arms
        self.log_rows = []
        self.sampled_rows = []
        self.last_used = {}
        self.deployment_names = deployment_names if deployment_names is not None else {}
        self.route_names = {}
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._pruned_at = 0.0
        self._minute_key, self._minute_dt = None, None

    # --- the hot path (after the response was sent) ----------------------------------

    def record(self, record):
        """Fold one finished request into the metrics, the rollup deltas and the log sample.

        Done at once on the event loop (about 10 µs): folding in the flusher
        thread instead made both threads take turns on the GIL in 5 ms slices,
        which showed up as latency spikes at p99.
        """
        with self._lock:
            self._fold(record)

    def shadow(self, route_id, primary, mirror):
        """Fold one mirrored request into the shadow rollups: the primary's attempt (proxy.Try) and the
        canary's answer (shadow.Mirror), side by side; timed by the whole answer, without time to first token."""
        when = self._minute(time.time())
        with self._lock:
            for arm in (primary, mirror):
                self.shadows.add(arm.target.deployment_id, when=when, route_id=route_id, outcome=arm.outcome,
                                 latency_ms=arm.ms, tokens_in=arm.tokens_in, tokens_out=arm.tokens_out,
                                 cost=arm.cost)

    def key_invalid(self, key, reason):
        self.changes.append(("key_invalid", key.id, reason, time.time()))

    def key_suspect(self, key, reason):
        self.changes.append(("key_suspect", key.id, reason, time.time()))

    def key_trusted(self, key):
        self.changes.append(("key_trusted", key.id, "", time.time()))

    def key_cooling(self, key, until, reason):
        self.changes.append(("key_cooling", key.id, reason, until))

    def key_recovered(self, key):
        self.changes.append(("key_active", key.id, "", time.time()))

    def window_learned(self, deployment_id, tokens, error):
        self.changes.append(("window_learned", deployment_id, error, time.time(), tokens))

    def circuit_changed(self, deployment_id, state, reason, at):
        name = self.deployment_names.get(deployment_id, str(deployment_id))
        self.metrics.circuit_changed(name, state)
        self.changes.append(("circuit", deployment_id, reason, at, state))

    def _fold(self, record):
        self.metrics.observe(record)
        if record.client_key_id is None:  # anonymous: counted in /metrics, never logged row by row
            return
        self.last_used[record.client_key_id] = record.at
        when = self._minute(record.at)
        for attempt in record.tried:
            if attempt.outcome in NOT_THE_DEPLOYMENTS or attempt.too_long:  # too long: the request's fault
                continue
            self.aggregator.add(attempt.target.deployment_id, attempt.key.id if attempt.key is not None else None,
                                when=when, route_id=record.route_id, outcome=attempt.outcome, latency_ms=attempt.ms,
                                ttft_ms=attempt.ttft_ms, tps=attempt.tps, tokens_in=attempt.tokens_in,
                                tokens_out=attempt.tokens_out, cost=attempt.cost)
        if record.outcome != Outcome.OK:
            self._keep(self.log_rows, MAX_LOG_ROWS_PER_FLUSH, record, when)
        elif self.rng.random() < self.log_sample:
            self._keep(self.sampled_rows, MAX_SAMPLED_ROWS_PER_FLUSH, record, when)

    def _keep(self, rows, cap, record, when):
        if len(rows) < cap:
            rows.append(self._log_row(record, when))
        else:
            self.metrics.dropped("request_log")

    def _minute(self, at):
        """Return the UTC datetime of the minute of epoch `at` (cached: one per minute, not per request)."""
        minute = int(at // 60)
        if minute != self._minute_key:
            self._minute_key, self._minute_dt = minute, datetime.fromtimestamp(minute * 60, UTC)
        return self._minute_dt

    def _log_row(self, record, when):
        tried = [{"deployment": a.target.deployment, "key": a.key.label if a.key is not None else None,
                  "outcome": a.outcome, "status": a.status, "ms": round(a.ms, 2), "error": storable(a.error, 200),
                  "fallback": a.target.fallback or None,
                  **({"continuation": True} if a.continuation else {})}
                 for a in record.tried]
        return RequestLog(
            created_at=when, request_id=record.request_id, route_id=record.route_id,
            route_name=storable(record.route, 100),
            deployment_id=record.deployment_id, api_key_id=record.key_id, gateway_key_id=record.client_key_id,
            outcome=record.outcome, status=record.status, stream=record.stream, attempts=len(record.tried),
            latency_ms=record.latency_ms, ttft_ms=record.ttft_ms, overhead_ms=record.overhead_ms,
            tokens_in=record.tokens_in, tokens_out=record.tokens_out, cost=round(record.cost, 8),
            error=storable(record.error, 500), fallback=record.fallback, tried=tried,
            request_body=_storable_json(record.request_body) if self.log_bodies else None,
            response_body=storable(record.response_body, 1_000_000) if self.log_bodies else "",
        )

    # --- flushing (the flusher thread) ----------------------------------------------

    def start(self):
        self._thread = threading.Thread(target=self._run, name="gateway-flusher", daemon=True)
        self._thread.start()

    def stop(self, timeout=5.0):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self):
        try:
            while not self._stop.wait(self.flush_interval_s):
                self.flush()
            self.flush()
        finally:
            connections.close_all()

    def flush(self):
        """Write everything collected so far. Never raises: a failed write is logged and retried next time."""
        try:
            close_old_connections()
            reset_queries()  # DEBUG keeps a thread's queries until a request starts: none does in this thread
            self._apply_changes()
            written = self._write_rollups()
            self._write_log()
            self._write_last_used()
            self._prune()
        except (OperationalError, InterfaceError) as exc:
            self.database.failed(exc)  # logged once per outage; everything unsaved waits for the next flush
        except Exception:
            log.warning("gateway flush failed; will retry", exc_info=True)
        else:
            if written:
                self.database.answered()

    def _write_rollups(self):
        """Save each delta on its own: one that cannot be saved never blocks the ones after it.

        While the database is unreachable (OperationalError) the rest go back
        for the next flush; a delta the database refuses (e.g. its deployment
        was deleted) is logged, dropped and counted. Return False when the
        database was unreachable.
        """
        with self._lock:
            deltas = self.aggregator.drain() + self.shadows.drain()
        saved = []
        reachable = True
        for done, delta in enumerate(deltas):
            try:
                rollups.save_delta(delta)
            except OperationalError as exc:
                with self._lock:
                    for unsaved in deltas[done:]:
                        self.aggregator.put_back(unsaved)
                self.database.failed(exc)  # logged once per outage; retried at the next flush
                reachable = False
                break
            except DatabaseError:
                self.metrics.dropped("rollup")
                log.warning("dropped a gateway rollup delta the database refused", exc_info=True)
            else:
                saved.append(delta)
        for route_id, deployment_id, minute in {(d.route_id, d.deployment_id, d.minute) for d in saved
                                                if d.source == Source.TRAFFIC}:
            self._push_traffic_point(route_id, deployment_id, minute)
        return reachable

    def _push_traffic_point(self, route_id, deployment_id, minute):
        stats = rollups.window_stats(deployment_id, Source.TRAFFIC, minute, minute + timedelta(minutes=1),
                                     route_id=route_id)
        live.traffic_point(live.TrafficPoint(
            deployment=self.deployment_names.get(deployment_id, str(deployment_id)),
            route=self.route_names.get(route_id, ""), minute=minute.isoformat(), count=stats["count"], ok=stats["ok"],
            errors=stats["errors"], p50_ms=stats["p50_ms"], p95_ms=stats["p95_ms"], ttft_p50_ms=stats["ttft_p50_ms"],
            at=timezone.now().isoformat(),
        ))

    def _write_log(self):
        with self._lock:
            rows, self.log_rows, self.sampled_rows = self.log_rows + self.sampled_rows, [], []
        if not rows:
            return
        try:
            RequestLog.objects.bulk_create(rows)
        except OperationalError:
            with self._lock:  # the next flush tries again, failures first
                self.log_rows = (rows + self.log_rows)[:MAX_LOG_ROWS_PER_FLUSH]
            raise
        except DatabaseError:  # one row the database refuses: save the others one by one
            self._write_log_rows_one_by_one(rows)

    def _write_log_rows_one_by_one(self, rows):
        for row in rows:
            try:
                with transaction.atomic():
                    row.save(force_insert=True)
            except DatabaseError:
                self.metrics.dropped("request_log")
                log.warning("dropped a request-log row the database refused (%s)", row.request_id, exc_info=True)

    def _write_last_used(self):
        with self._lock:
            used, self.last_used = self.last_used, {}
        try:
            for key_id, at in used.items():
                GatewayKey.objects.filter(pk=key_id).update(last_used_at=datetime.fromtimestamp(at, UTC))
        except OperationalError:
            with self._lock:
                self.last_used = {**used, **self.last_used}
            raise

    def _prune(self):
        now = time.monotonic()
        if now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        from django.conf import settings

        cutoff = timezone.now() - timedelta(days=settings.GATEWAY_LOG_RETENTION_DAYS)
        RequestLog.objects.filter(created_at__lt=cutoff).delete()

    # --- state changes ---------------------------------------------------------------

    def _apply_changes(self):
        while self.changes:
            change = self.changes.popleft()
            try:
                APPLY[change[0]](change)
            except OperationalError:  # e.g. the database is busy: keep it for the next flush
                self.changes.appendleft(change)
                raise
            except Exception:
                self.metrics.dropped(change[0])
                log.warning("could not save the gateway's %s change; dropped", change[0], exc_info=True)


def _when(epoch):
    return datetime.fromtimestamp(epoch, UTC)


def _apply_key_invalid(change):
    _, key_id, reason, _ = change
    ApiKey.change_state(key_id, KeyState.INVALID, f"the upstream refused the key: {reason}", ACTOR)


def _apply_key_suspect(change):
    _, key_id, reason, _ = change
    ApiKey.suspect(key_id, f"the upstream refused it once: {reason}", ACTOR)


def _apply_key_trusted(change):
    _, key_id, _, _ = change
    ApiKey.clear_suspicion(key_id, "a request with it succeeded", ACTOR)


def _apply_key_cooling(change):
    _, key_id, reason, until = change
    ApiKey.change_state(key_id, KeyState.RATE_LIMITED, reason, ACTOR, until=_when(until))


def _apply_key_active(change):
    _, key_id, _, _ = change
    ApiKey.change_state(key_id, KeyState.ACTIVE, "answering again", ACTOR)


CIRCUIT_EVENTS = {CircuitState.OPEN: EventKind.CIRCUIT_OPEN, CircuitState.HALF_OPEN: EventKind.CIRCUIT_HALF_OPEN,
                  CircuitState.CLOSED: EventKind.CIRCUIT_CLOSED}


def _apply_circuit(change):
    _, deployment_id, reason, at, state = change
    with transaction.atomic():
        DeploymentCircuit.objects.update_or_create(deployment_id=deployment_id,
                                                   defaults={"state": state, "reason": reason[:300],
                                                             "since": _when(at)})
        transaction.on_commit(snapshot.announce_change)  # other gateway processes adopt it
        event = Event.objects.create(kind=CIRCUIT_EVENTS[state], deployment_id=deployment_id, created_at=_when(at),
                                     message=f"Circuit {CircuitState(state).label.lower()}: {reason}"[:500],
                                     data={"reason": reason})
    transaction.on_commit(lambda: live.timeline_event(event))


def _apply_window_learned(change):
    _, deployment_id, error, _, tokens = change
    with transaction.atomic():
        Deployment.learn_window(deployment_id, tokens, error, ACTOR)


APPLY = {"key_invalid": _apply_key_invalid, "key_suspect": _apply_key_suspect,
         "key_trusted": _apply_key_trusted, "key_cooling": _apply_key_cooling, "key_active": _apply_key_active,
         "circuit": _apply_circuit, "window_learned": _apply_window_learned}
