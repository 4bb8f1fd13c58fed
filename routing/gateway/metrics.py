"""The gateway's Prometheus metrics (served at /metrics).

Counts are kept in plain dicts and bucket lists on the event loop and turned
into metric families only when scraped, through a prometheus_client custom
collector. Measured: the library's own Counter/Histogram objects cost 9-10 µs
per request here (a lock and a label lookup per observation, seven per
request), more than a tenth of the gateway's whole per-request budget.
"""

import hmac
from bisect import bisect_left

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import parse_cookie
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from routing.models import CircuitState
from routing.outcomes import Outcome

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Buckets:
    """One histogram series: counts per upper bound (Prometheus `le`), plus the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value):
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self):
        """Return [(le, cumulative count)] ending with +Inf, as the exposition format wants."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


async def scrape_allowed(scope):
    """Return True when the request carries `Authorization: Bearer <WEATHERVANE_METRICS_TOKEN>`
    or the session cookie of an active staff user (a browser signed in to the dashboard)."""
    headers = dict(scope["headers"])
    if _token_matches(headers.get(b"authorization", b"")):
        return True
    session_key = parse_cookie(headers.get(b"cookie", b"").decode("latin-1")).get(settings.SESSION_COOKIE_NAME)
    return bool(session_key) and await sync_to_async(_is_staff_session)(session_key)


def _token_matches(authorization):
    scheme, _, token = authorization.partition(b" ")
    expected = settings.METRICS_TOKEN.encode()
    return bool(expected) and scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), expected)


def _is_staff_session(session_key):
    from importlib import import_module

    from django.contrib.auth import get_user

    class SessionOnly:  # what get_user reads of a request
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)

    user = get_user(SessionOnly())
    return user.is_active and user.is_staff


def _bump(table, key, amount=1):
    table[key] = table.get(key, 0) + amount


class Metrics:
    """Per-process gateway metrics; `registry` is what /metrics renders."""

    def __init__(self):
        self.requests = {}  # (route, deployment, outcome) -> count
        self.attempts = {}  # (deployment, outcome) -> count
        self.latency = {}  # (route, deployment) -> Buckets
        self.ttft = {}
        self.overhead = Buckets(OVERHEAD_BUCKETS)
        self.tokens = {}  # (deployment, "in" | "out") -> count
        self.cost = {}  # deployment -> currency units
        self.circuits = {}  # deployment -> 0 closed, 1 half-open, 2 open
        self.snapshot_version = 0
        self.unauthenticated = 0  # requests without a valid gateway key: counted, never logged one by one
        self.drops = {}  # (what,) -> records the database refused, dropped after logging
        self.repairs = {}  # (deployment, note) -> answers repaired (a malformed event skipped, [DONE] added)
        self.continuations = {}  # (route, result) -> broken streams continued on another target (proxy.Continued)
        self.limits_fallbacks = 0  # times the limits fell back to this process's memory (Redis failed)
        self.limits_falling_back = 0  # 1 while they are there
        self.limits_redis_errors = 0  # rate-limit commands Redis failed or did not answer in time
        self.concurrency = None  # proxy.ProviderSlots: in-flight, waits and overflows per provider
        self.dependencies = None  # () -> {"database": up, "redis": up}: health.dependencies of the gateway
        self.fallbacks = {}  # (route, deployment) -> requests a fallback answered
        self.shadows = {}  # (result,) -> mirrored requests of a rollout's shadow step: sent, dropped (too many)
        self.trials = {}  # (deployment, result) -> the gateway's own trials of open circuits (trials.py)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def observe(self, record):
        """Count one finished request (recorder.Record)."""
        if record.client_key_id is None:
            self.unauthenticated += 1
        for note in record.notes:
            _bump(self.repairs, (record.deployment or "-", note))
        route, deployment = record.route or "-", record.deployment or "-"
        if record.continuation is not None:
            _bump(self.continuations, (route, record.continuation))
        _bump(self.requests, (route, deployment, record.outcome))
        if record.fallback and record.outcome == Outcome.OK:
            _bump(self.fallbacks, (route, record.fallback))
        for attempt in record.tried:
            _bump(self.attempts, (attempt.target.deployment, attempt.outcome))
        if record.latency_ms is not None and record.deployment:
            self._series(self.latency, (route, deployment), LATENCY_BUCKETS).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self._series(self.ttft, (route, deployment), LATENCY_BUCKETS).observe(record.ttft_ms / 1000)
        if record.overhead_ms is not None:
            self.overhead.observe(record.overhead_ms / 1000)
        if record.continuation is not None:  # a broken stream and its continuation: each deployment its own usage
            for attempt in record.tried:
                self._usage(attempt.target.deployment, attempt.tokens_in, attempt.tokens_out, attempt.cost)
        else:
            self._usage(deployment, record.tokens_in, record.tokens_out, record.cost)

    def _usage(self, deployment, tokens_in, tokens_out, cost):
        if tokens_in or tokens_out:
            _bump(self.tokens, (deployment, "in"), tokens_in)
            _bump(self.tokens, (deployment, "out"), tokens_out)
        if cost:
            _bump(self.cost, deployment, cost)

    @staticmethod
    def _series(table, labels, bounds):
        series = table.get(labels)
        if series is None:
            series = table[labels] = Buckets(bounds)
        return series

    def dropped(self, what):
        _bump(self.drops, (what,))

    def shadowed(self, result):
        _bump(self.shadows, (result,))

    def trial(self, deployment, result):
        _bump(self.trials, (deployment, result))

    def circuit_changed(self, deployment, state):
        self.circuits[deployment] = CIRCUIT_VALUES.get(state, 0)

    # --- the custom collector ------------------------------------------------------

    def collect(self):
        yield self._counter("weathervane_gateway_requests", "Client requests by route, serving deployment and outcome",
                            ["route", "deployment", "outcome"], self.requests)
        yield self._counter("weathervane_gateway_upstream_attempts", "Upstream attempts by deployment and outcome",
                            ["deployment", "outcome"], self.attempts)
        yield self._histogram("weathervane_gateway_request_duration_seconds", "Total request latency",
                              ["route", "deployment"], self.latency)
        yield self._histogram("weathervane_gateway_ttft_seconds", "Time to first token of streamed requests",
                              ["route", "deployment"], self.ttft)
        yield self._histogram("weathervane_gateway_overhead_seconds", "Time the gateway itself spent per request",
                              [], {(): self.overhead})
        yield self._counter("weathervane_gateway_tokens", "Tokens by deployment and direction",
                            ["deployment", "direction"], self.tokens)
        yield self._counter("weathervane_gateway_cost", "Cost from the deployments' prices", ["deployment"],
                            {(d,): v for d, v in self.cost.items()})
        circuit = GaugeMetricFamily("weathervane_gateway_circuit_state",
                                    "Circuit state per deployment (0 closed, 1 half-open, 2 open)",
                                    labels=["deployment"])
        for deployment, value in list(self.circuits.items()):
            circuit.add_metric([deployment], value)
        yield circuit
        yield CounterMetricFamily("weathervane_gateway_unauthenticated_requests",
                                  "Requests refused for a missing or unknown gateway key", value=self.unauthenticated)
        yield self._counter("weathervane_gateway_stream_repairs", "Streams repaired yet successful, by kind",
                            ["deployment", "kind"], self.repairs)
        yield self._counter("weathervane_gateway_stream_continuations",
                            "Broken streams continued on another target from a prefill, by route and result",
                            ["route", "result"], self.continuations)
        yield self._counter("weathervane_gateway_fallback_answers",
                            "Requests answered by a fallback (every weighted target failed or had an open circuit)",
                            ["route", "deployment"], self.fallbacks)
        yield self._counter("weathervane_gateway_recorder_dropped",
                            "Records the database refused (logged, then dropped)",
                            ["what"], self.drops)
        yield self._counter("weathervane_gateway_shadow_requests",
                            "Requests mirrored to a shadow step's canary (sent) or not (dropped: too many in flight)",
                            ["result"], self.shadows)
        yield self._counter("weathervane_gateway_circuit_trials",
                            "The gateway's own one-token trials of open circuits, by deployment and result "
                            "(closed: it answered; failed; inconclusive: the next request is the trial)",
                            ["deployment", "result"], self.trials)
        yield GaugeMetricFamily("weathervane_gateway_snapshot_version", "Config snapshot this process serves",
                                value=self.snapshot_version)
        yield CounterMetricFamily("weathervane_gateway_limits_fallback",
                                  "Times the rate limits fell back to per-process counters because Redis failed",
                                  value=self.limits_fallbacks)
        yield CounterMetricFamily("weathervane_gateway_limits_redis_errors",
                                  "Rate-limit commands that Redis failed or did not answer in time (counted locally)",
                                  value=self.limits_redis_errors)
        yield GaugeMetricFamily("weathervane_gateway_limits_fallback_active",
                                "1 while the rate limits are per process because Redis failed, else 0",
                                value=self.limits_falling_back)
        if self.dependencies is not None:
            yield self._dependencies(self.dependencies())
        if self.concurrency is not None:
            yield from self._concurrency(self.concurrency)

    @staticmethod
    def _dependencies(states):
        up = GaugeMetricFamily("weathervane_gateway_dependency_up",
                               "1 while a dependency answers this process (database: the config poll; redis: the "
                               "change-notice subscription), else 0: /readyz names the ones down as degraded",
                               labels=["dependency"])
        for name, answering in states.items():
            up.add_metric([name], 1 if answering else 0)
        return up

    def _concurrency(self, slots):
        in_flight = GaugeMetricFamily("weathervane_gateway_provider_in_flight",
                                      "Requests in flight per provider with a max_concurrency (this process)",
                                      labels=["provider"])
        for provider, count in list(slots.in_flight.items()):
            in_flight.add_metric([provider], count)
        yield in_flight
        yield self._counter("weathervane_gateway_provider_concurrency_waits",
                            "Requests that waited for a slot of a provider at its max_concurrency",
                            ["provider"], slots.waits)
        yield self._counter("weathervane_gateway_provider_concurrency_overflows",
                            "Requests that found no slot in time and failed over (never counted against the provider)",
                            ["provider"], slots.overflows)

    @staticmethod
    def _counter(name, documentation, labels, table):
        family = CounterMetricFamily(name, documentation, labels=labels)
        for key, value in list(table.items()):
            family.add_metric(list(key), value)
        return family

    @staticmethod
    def _histogram(name, documentation, labels, table):
        family = HistogramMetricFamily(name, documentation, labels=labels)
        for key, series in list(table.items()):
            family.add_metric(list(key), series.cumulative(), series.sum)
        return family
