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
GATEWAY_FLUSH_INTERVAL_S.
"""

import logging
import random
import threading
import time
from collections import deque
from datetime import datetime, timedelta, timezone as dt_timezone

from django.db import OperationalError, close_old_connections, connections, transaction
from django.utils import timezone

from dashboard import live
from probes import rollups
from routing import audit
from routing.gateway import snapshot
from routing.gateway.metrics import Metrics
from routing.models import (
    ApiKey, AuditAction, CircuitState, DeploymentCircuit, Event, EventKind, GatewayKey, KeyState, RequestLog, RequestOutcome,
)

log = logging.getLogger(__name__)

MAX_LOG_ROWS_PER_FLUSH = 1000
ACTOR = "system:gateway"
# Not held against a deployment in its rollups: no upstream call was made, or the client left.
NOT_THE_DEPLOYMENTS = frozenset({RequestOutcome.NO_CAPACITY, RequestOutcome.CLIENT_CLOSED})


class Record:
    """One finished request; `tried` holds one proxy.Try per upstream attempt."""

    __slots__ = ("at", "request_id", "route_id", "route", "client_key_id", "deployment_id", "deployment", "key_id",
                 "outcome", "status", "stream", "tried", "latency_ms", "ttft_ms", "overhead_ms", "tokens_in",
                 "tokens_out", "cost", "error", "request_body", "response_body")

    def __init__(self, request_id, route_id=None, route="", client_key_id=None):
        self.at = time.time()
        self.request_id = request_id
        self.route_id = route_id
        self.route = route
        self.client_key_id = client_key_id
        self.deployment_id = self.deployment = self.key_id = None
        self.outcome = RequestOutcome.OK
        self.status = 200
        self.stream = False
        self.tried = []
        self.latency_ms = self.ttft_ms = self.overhead_ms = None
        self.tokens_in = self.tokens_out = 0
        self.cost = 0.0
        self.error = ""
        self.request_body = self.response_body = None


class Recorder:
    """Collects Records and state changes; a thread flushes them to the database."""

    def __init__(self, flush_interval_s, log_sample, log_bodies=False, deployment_names=None, rng=None):
        self.flush_interval_s = flush_interval_s
        self.log_sample = log_sample
        self.log_bodies = log_bodies
        self.metrics = Metrics()
        self.changes = deque()
        self.aggregator = rollups.Aggregator("traffic")
        self.log_rows = []
        self.last_used = {}
        self.routes_by_deployment = {}
        self.deployment_names = deployment_names if deployment_names is not None else {}
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

    def key_invalid(self, key, reason):
        self.changes.append(("key_invalid", key.id, reason, time.time()))

    def key_cooling(self, key, until, reason):
        self.changes.append(("key_cooling", key.id, reason, until))

    def key_recovered(self, key):
        self.changes.append(("key_active", key.id, "", time.time()))

    def circuit_changed(self, deployment_id, state, reason, at):
        name = self.deployment_names.get(deployment_id, str(deployment_id))
        self.metrics.circuit_changed(name, state)
        self.changes.append(("circuit", deployment_id, reason, at, state))

    def _fold(self, record):
        self.metrics.observe(record)
        if record.client_key_id is not None:
            self.last_used[record.client_key_id] = record.at
        when = self._minute(record.at)
        for attempt in record.tried:
            if attempt.outcome in NOT_THE_DEPLOYMENTS:
                continue
            deployment_id = attempt.target.deployment_id
            self.aggregator.add(deployment_id, attempt.key.id if attempt.key is not None else None, when=when,
                                outcome=attempt.outcome, latency_ms=attempt.ms, ttft_ms=attempt.ttft_ms, tps=attempt.tps,
                                tokens_in=attempt.tokens_in, tokens_out=attempt.tokens_out, cost=attempt.cost)
            if record.route:
                self.routes_by_deployment[deployment_id] = record.route
        if record.outcome != RequestOutcome.OK or self.rng.random() < self.log_sample:
            if len(self.log_rows) < MAX_LOG_ROWS_PER_FLUSH:
                self.log_rows.append(self._log_row(record, when))

    def _minute(self, at):
        """Return the UTC datetime of the minute of epoch `at` (cached: one per minute, not per request)."""
        minute = int(at // 60)
        if minute != self._minute_key:
            self._minute_key, self._minute_dt = minute, datetime.fromtimestamp(minute * 60, dt_timezone.utc)
        return self._minute_dt

    def _log_row(self, record, when):
        tried = [{"deployment": a.target.deployment, "key": a.key.label if a.key is not None else None,
                  "outcome": a.outcome, "status": a.status, "ms": round(a.ms, 2), "error": a.error[:200]}
                 for a in record.tried]
        return RequestLog(
            created_at=when, request_id=record.request_id, route_id=record.route_id, route_name=record.route or "",
            deployment_id=record.deployment_id, api_key_id=record.key_id, gateway_key_id=record.client_key_id,
            outcome=record.outcome, status=record.status, stream=record.stream, attempts=len(record.tried),
            latency_ms=record.latency_ms, ttft_ms=record.ttft_ms, overhead_ms=record.overhead_ms,
            tokens_in=record.tokens_in, tokens_out=record.tokens_out, cost=round(record.cost, 8), error=record.error[:500],
            tried=tried, request_body=record.request_body if self.log_bodies else None,
            response_body=(record.response_body or "") if self.log_bodies else "",
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
            self._apply_changes()
            self._write_rollups()
            self._write_log()
            self._write_last_used()
            self._prune()
        except Exception:
            log.warning("gateway flush failed; will retry", exc_info=True)

    def _write_rollups(self):
        with self._lock:
            deltas = self.aggregator.drain()
        for done, delta in enumerate(deltas):
            try:
                rollups.save_deltas([delta])
            except Exception:
                with self._lock:  # put back what was not saved, for the next flush to merge
                    for unsaved in deltas[done:]:
                        self._readd(unsaved)
                raise
        for deployment_id, minute in {(d.deployment_id, d.minute) for d in deltas}:
            self._push_traffic_point(deployment_id, minute)

    def _readd(self, delta):
        key = (delta.minute, delta.deployment_id, delta.api_key_id)
        existing = self.aggregator.deltas.get(key)
        if existing is None:
            self.aggregator.deltas[key] = delta
            return
        existing.count += delta.count
        existing.ok += delta.ok
        for kind, n in delta.errors.items():
            existing.errors[kind] = existing.errors.get(kind, 0) + n
        existing.latency.merge(delta.latency)
        existing.ttft.merge(delta.ttft)
        existing.tokens_in += delta.tokens_in
        existing.tokens_out += delta.tokens_out
        existing.tps_sum += delta.tps_sum
        existing.tps_count += delta.tps_count
        existing.cost += delta.cost

    def _push_traffic_point(self, deployment_id, minute):
        stats = rollups.window_stats(deployment_id, "traffic", minute, minute + timedelta(minutes=1))
        live.traffic_point({
            "deployment": self.deployment_names.get(deployment_id, str(deployment_id)),
            "route": self.routes_by_deployment.get(deployment_id, ""),
            "minute": minute.isoformat(), "count": stats["count"], "ok": stats["ok"], "errors": stats["errors"],
            "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "ttft_p50_ms": stats["ttft_p50_ms"],
            "at": timezone.now().isoformat(),
        })

    def _write_log(self):
        with self._lock:
            rows, self.log_rows = self.log_rows, []
        if not rows:
            return
        try:
            RequestLog.objects.bulk_create(rows)
        except OperationalError:
            with self._lock:  # the next flush tries again
                self.log_rows = (rows + self.log_rows)[:MAX_LOG_ROWS_PER_FLUSH]
            raise

    def _write_last_used(self):
        with self._lock:
            used, self.last_used = self.last_used, {}
        try:
            for key_id, at in used.items():
                GatewayKey.objects.filter(pk=key_id).update(last_used_at=datetime.fromtimestamp(at, dt_timezone.utc))
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
                log.warning("could not save the gateway's %s change; dropped", change[0], exc_info=True)


def _when(epoch):
    return datetime.fromtimestamp(epoch, dt_timezone.utc)


def _timeline(event):
    live.timeline_event({
        "kind": event.kind, "message": event.message,
        "deployment": event.deployment.name if event.deployment_id else None,
        "route": None, "api_key": str(event.api_key) if event.api_key_id else None,
        "at": event.created_at.isoformat(),
    })


def _set_key_state(key_id, state, reason, since, until=None):
    """Save a key's new state with the ORM (so the config-change notice fires); return (key, before) or None."""
    key = ApiKey.objects.select_for_update().select_related("provider").filter(pk=key_id).first()
    if key is None:
        return None
    before = audit.snapshot(key)
    key.state, key.state_reason, key.state_since, key.rate_limited_until = state, reason[:300], since, until
    key.save(update_fields=["state", "state_reason", "state_since", "rate_limited_until", "updated_at"])
    return key, before


def _apply_key_invalid(change):
    _, key_id, reason, at = change
    with transaction.atomic():
        current = ApiKey.objects.filter(pk=key_id).values_list("state", flat=True).first()
        if current in (None, KeyState.INVALID, KeyState.DISABLED):
            return
        key, before = _set_key_state(key_id, KeyState.INVALID, reason, _when(at))
        audit.record(action=AuditAction.KEY_STATE, obj=key, actor=ACTOR, before=before, after=audit.snapshot(key),
                     reason=f"The upstream refused the key: {reason}")
        event = Event.objects.create(kind=EventKind.KEY_INVALID, api_key=key, message=f"Key {key} marked invalid: {reason}"[:500],
                                     data={"reason": reason})
    _timeline(event)


def _apply_key_cooling(change):
    _, key_id, reason, until = change
    with transaction.atomic():
        row = ApiKey.objects.filter(pk=key_id).values_list("state", "rate_limited_until").first()
        if row is None or row[0] in (KeyState.INVALID, KeyState.DISABLED):
            return
        if row[0] == KeyState.RATE_LIMITED and row[1] is not None and row[1].timestamp() >= until - 1:
            return  # already cooling at least that long
        key, _ = _set_key_state(key_id, KeyState.RATE_LIMITED, reason, timezone.now(), _when(until))
        event = None
        if row[0] != KeyState.RATE_LIMITED:
            event = Event.objects.create(kind=EventKind.KEY_RATE_LIMITED, api_key=key,
                                         message=f"Key {key} rate-limited until {_when(until):%H:%M:%S} UTC", data={"reason": reason})
    if event is not None:
        _timeline(event)


def _apply_key_active(change):
    _, key_id, _, at = change
    with transaction.atomic():
        state = ApiKey.objects.filter(pk=key_id).values_list("state", flat=True).first()
        if state != KeyState.RATE_LIMITED:
            return
        key, _ = _set_key_state(key_id, KeyState.ACTIVE, "", _when(at))
        event = Event.objects.create(kind=EventKind.KEY_ACTIVE, api_key=key, message=f"Key {key} is answering again")
    _timeline(event)


CIRCUIT_EVENTS = {CircuitState.OPEN: EventKind.CIRCUIT_OPEN, CircuitState.HALF_OPEN: EventKind.CIRCUIT_HALF_OPEN,
                  CircuitState.CLOSED: EventKind.CIRCUIT_CLOSED}


def _apply_circuit(change):
    _, deployment_id, reason, at, state = change
    with transaction.atomic():
        DeploymentCircuit.objects.update_or_create(deployment_id=deployment_id,
                                                   defaults={"state": state, "reason": reason[:300], "since": _when(at)})
        transaction.on_commit(snapshot.announce_change)  # other gateway processes adopt it
        event = Event.objects.create(kind=CIRCUIT_EVENTS[state], deployment_id=deployment_id, created_at=_when(at),
                                     message=f"Circuit {CircuitState(state).label.lower()}: {reason}"[:500], data={"reason": reason})
    _timeline(Event.objects.select_related("deployment").get(pk=event.pk))


APPLY = {"key_invalid": _apply_key_invalid, "key_cooling": _apply_key_cooling, "key_active": _apply_key_active,
         "circuit": _apply_circuit}
