"""The gateway's immutable view of the routing config, and how it stays fresh.

Each gateway process serves from a `Snapshot`: routes with their weighted
targets and their ordered fallback chain (deployment, provider URL and
timeouts, the first-token timeout in effect, upstream model, context window
(typed, else discovered: see `Deployment.window`), prices, keys with their
secrets decrypted in memory only), and the gateway keys by hash. The learned
first-token timeouts (routing.first_token) are re-read every LEARN_EVERY_S in
the refresher thread; a changed one rebuilds.
No request queries the database. A request takes `store.current` once and
finishes on it even if a newer snapshot replaces it meanwhile.

A config change calls `announce_change()` on commit (routing/signals.py).
In-process it wakes every store's refresher thread; with REDIS_URL it also
publishes a notice that the stores of all other gateway processes listen
for. Behind both, each store compares a cheap fingerprint of the config
tables every GATEWAY_SNAPSHOT_POLL_S, so a lost notice costs a second at most.
"""

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections, reset_queries
from django.db.models import Prefetch

from dashboard.outages import OutageLog
from dashboard.redis_guard import Outage, client_options
from routing import first_token
from routing.crypto import SecretUnreadable
from routing.first_token import TimeoutSource
from routing.models import (
    ApiKey,
    ContinueStreams,
    Deployment,
    DeploymentCircuit,
    GatewayKey,
    KeyState,
    Provider,
    Route,
    RouteFallback,
    RouteTarget,
    WindowSource,
)
from routing.netguard import UpstreamBlocked, check_host

log = logging.getLogger(__name__)

CHANNEL = "weathervane:gateway:config"
_listeners = set()  # the change events of every SnapshotStore in this process
_publisher = {}
_notice_outage = Outage("config-change notices")


def announce_change():
    """Tell every gateway process that the config changed (called on commit)."""
    for event in list(_listeners):
        event.set()
    if settings.REDIS_URL:
        _publish(settings.REDIS_URL)


def _publish(url):
    """Publish the notice, bounded (it runs on commit, in the request that changed the config).

    While Redis fails, notices are skipped (the version poll catches the change within a second).
    """
    if _notice_outage.skip():
        return
    try:
        import redis

        client = _publisher.get(url)
        if client is None:
            client = _publisher[url] = redis.Redis.from_url(url, **client_options())
        client.publish(CHANNEL, str(time.time()))
    except Exception as error:  # the version poll still catches the change
        _notice_outage.failed(error)
    else:
        _notice_outage.answered()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A provider key as the hot path needs it. `auth` holds the secret: never log it."""

    id: int
    provider_id: int
    label: str
    masked: str
    auth: str = field(repr=False)
    rpm_limit: int | None
    tpm_limit: int | None
    state: str
    blocked_until: float  # epoch seconds the DB says the key is cooling until (0: usable)
    updated: float  # epoch seconds of the row's last save
    suspect: bool = False  # an upstream answered 401 once (any process): a second 401 on another request confirms

    @property
    def secret(self):
        """The plaintext key, for redacting it from upstream error text (never for display)."""
        return self.auth[7:]


@dataclass(frozen=True, slots=True)
class Target:
    deployment_id: int
    deployment: str
    provider_id: int
    provider: str
    upstream_model: str
    weight: int
    chat_url: str
    embeddings_url: str
    timeout: aiohttp.ClientTimeout
    read_timeout: float
    first_token_timeout: float  # seconds: the deployment's override, learned or default (routing.first_token)
    price_in: float  # per token
    price_out: float
    keys: tuple
    max_concurrency: int | None = None  # the provider's in-flight limit per gateway process (None: unlimited)
    context_window: int | None = None  # tokens of prompt + completion; None: unknown, never skipped for it
    window_source: str = WindowSource.UNKNOWN  # where context_window came from (a typed one is never learned over)
    fallback: int = 0  # position in the route's fallback chain (1 first); 0 for a weighted target
    # The timeouts of a stream: a deployment known to think long (learned or set) may be silent as long.
    stream_timeout: aiohttp.ClientTimeout | None = None

    def cost(self, tokens_in, tokens_out):
        return tokens_in * self.price_in + tokens_out * self.price_out


@dataclass(frozen=True, slots=True)
class Shadow:
    """A rollout's shadow step on a route: `share` (0..1) of its answered requests are mirrored to `target`."""

    target: Target
    share: float


@dataclass(frozen=True, slots=True)
class RouteInfo:
    id: int
    name: str
    version: int
    targets: tuple  # weight > 0, enabled, not blocked; probe-down ones left out unless all are
    totals: tuple  # cumulative weights of `targets`
    # A broken stream may be continued on another target (proxy.Continuation): the route's ContinueStreams allows
    # it on one of its targets or fallbacks (precomputed: the relay keeps the text it sends only then).
    continue_streams: bool = False
    no_continuation: frozenset = frozenset()  # deployment ids never sent a continuation (unverified or refusing)
    fallbacks: tuple = ()  # Targets (weight 0, `fallback` = position) tried in order after every weighted one
    windows: bool = False  # some target or fallback has a known context window (the only case that costs a check)
    shadow: Shadow | None = None  # None unless a running rollout is at a shadow step (the rule)
    # False while a rollout runs on the route: session ids are ignored so each request draws its arm by weight
    # (sticky users would give the arms different users, and the verdict would judge the users, not the canary)
    sticky: bool = True


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A gateway key: who may call which routes, how often."""

    id: int
    name: str
    prefix: str
    all_routes: bool
    routes: frozenset
    rpm_limit: int | None

    def may_use(self, route_name):
        return self.all_routes or route_name in self.routes


@dataclass(frozen=True)
class Snapshot:
    version: int
    fingerprint: str
    routes: dict
    client_keys: dict  # sha256 hex of the bearer token -> ClientKey
    built_at: float
    down: frozenset = frozenset()
    keys: dict = field(default_factory=dict)  # provider key id -> KeyInfo
    deployments: dict = field(default_factory=dict)  # deployment id -> name
    circuits: dict = field(default_factory=dict)  # deployment id -> (state, since epoch, reason), as persisted
    first_token: dict = field(default_factory=dict)  # deployment id -> first_token.FirstTokenTimeout in effect
    trial_targets: dict = field(default_factory=dict)  # deployment id -> a Target of it, for the circuit trials

    def routes_for(self, client_key):
        """Return the sorted names of the routes `client_key` may use."""
        return sorted(name for name in self.routes if client_key.may_use(name))


EMPTY = Snapshot(0, "", {}, {}, 0.0)


# --- building ----------------------------------------------------------------

def probe_down_deployments():
    from probes.models import ProbeTarget  # probes builds on routing: imported late

    return ProbeTarget.down_deployment_ids()


def fingerprint():
    """Return a digest of every config row the snapshot depends on (cheap: small tables)."""
    parts = [
        list(Provider.objects.order_by("id").values_list("id", "updated_at", "enabled", "base_url", "connect_timeout",
                                                         "read_timeout", "max_concurrency")),
        list(ApiKey.objects.order_by("id").values_list("id", "updated_at", "enabled", "state", "rate_limited_until",
                                                       "rpm_limit", "tpm_limit", "secret_encrypted")),
        list(Route.objects.order_by("id").values_list("id", "name", "version", "continue_streams")),
        list(RouteTarget.objects.order_by("id").values_list("id", "route_id", "deployment_id", "weight")),
        list(RouteFallback.objects.order_by("id").values_list("id", "route_id", "deployment_id", "position")),
        list(GatewayKey.objects.order_by("id").values_list("id", "key_hash", "enabled", "all_routes", "rpm_limit")),
        list(GatewayKey.routes.through.objects.order_by("id").values_list("gatewaykey_id", "route_id")),
        list(Deployment.objects.order_by("id").values_list("id", "updated_at", "enabled", "name", "upstream_model",
                                                           "provider_id", "first_token_timeout",
                                                           "context_window", "learned_window", "provider_window",
                                                           "catalogue_window", "prefill_support", "prefill_model")),
        list(DeploymentCircuit.objects.order_by("deployment_id").values_list("deployment_id", "state", "since")),
        sorted(probe_down_deployments()),
        _shadow_steps(),
    ]
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest()


def _epoch(when):
    return when.timestamp() if when is not None else 0.0


def _key_info(key):
    """Return the KeyInfo of `key`, or None when it is unusable or its secret cannot be read."""
    if not key.enabled or key.state in (KeyState.INVALID, KeyState.DISABLED):
        return None
    try:
        secret = key.reveal()
    except SecretUnreadable:
        log.warning("API key %s (id %s) cannot be decrypted with the configured keys; skipped", key.label, key.pk)
        return None
    blocked = _epoch(key.rate_limited_until) if key.state == KeyState.RATE_LIMITED else 0.0
    return KeyInfo(key.pk, key.provider_id, key.label, key.masked, f"Bearer {secret}", key.rpm_limit,
                   key.tpm_limit, key.state, blocked, _epoch(key.updated_at), key.suspect_since is not None)


def _keys_by_provider():
    keys = {}
    for key in ApiKey.objects.filter(provider__enabled=True).order_by("id"):
        info = _key_info(key)
        if info is not None:
            keys.setdefault(key.provider_id, []).append(info)
    return {provider_id: tuple(infos) for provider_id, infos in keys.items()}


def _blocked(base_url):
    """Return a reason when the provider's URL points at a literal internal IP that is not allowed."""
    try:
        check_host(urlsplit(base_url).hostname or "", resolve=False)
    except UpstreamBlocked as blocked:
        return str(blocked)
    return None


def _stream_timeout(provider, in_effect):
    """Return the aiohttp timeouts of a stream: a deployment known (learned, or set) to think longer than its
    provider's read timeout may be silent that long, before its first token and between chunks."""
    read = provider.read_timeout
    if in_effect.source != TimeoutSource.DEFAULT:
        read = max(read, in_effect.seconds)
    return aiohttp.ClientTimeout(total=None, sock_connect=provider.connect_timeout, sock_read=read)


def _target(row, keys, timeouts, fallback=0):
    deployment, provider = row.deployment, row.deployment.provider
    base = provider.base_url.rstrip("/")
    in_effect = timeouts[deployment.pk]
    window, source = deployment.window()
    return Target(
        deployment_id=deployment.pk, deployment=deployment.name, provider_id=provider.pk, provider=provider.name,
        upstream_model=deployment.upstream_model, weight=0 if fallback else row.weight,
        chat_url=f"{base}/chat/completions", embeddings_url=f"{base}/embeddings",
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=provider.connect_timeout,
                                      sock_read=provider.read_timeout),
        read_timeout=provider.read_timeout,
        first_token_timeout=in_effect.seconds,
        price_in=float(deployment.input_price_per_mtok) / 1e6, price_out=float(deployment.output_price_per_mtok) / 1e6,
        keys=keys.get(provider.pk, ()), max_concurrency=provider.max_concurrency,
        context_window=window, window_source=source, fallback=fallback,
        stream_timeout=_stream_timeout(provider, in_effect),
    )


def _shadow_steps():
    """Return {route id: (canary deployment id, share 0..1) or None} of the running rollouts: the canary and
    its share at a shadow step, None at a weighted one."""
    from routing.rollouts.models import Rollout, RolloutState

    steps = {}
    running = Rollout.objects.filter(state=RolloutState.RUNNING).order_by("id")
    for route_id, canary_id, plan, step in running.values_list("route_id", "canary_id", "plan", "step"):
        current = plan[step] if step < len(plan) else {}
        steps[route_id] = (canary_id, current["shadow"] / 100) if current.get("shadow") else None
    return steps


def _shadow(route, keys, shadows, timeouts):
    canary_id, share = shadows[route.pk]
    row = next((t for t in route.targets.all() if t.deployment_id == canary_id), None)
    if row is None or not (row.deployment.enabled and row.deployment.provider.enabled):
        return None
    if _blocked(row.deployment.provider.base_url):
        return None
    return Shadow(_target(row, keys, timeouts), share)


def _servable(route, rows, what):
    """Return `rows` (targets or fallbacks) whose deployment and provider are enabled and whose URL is allowed;
    probe-down ones are the caller's to drop."""
    rows = [r for r in rows if r.deployment.enabled and r.deployment.provider.enabled]
    for row in list(rows):
        reason = _blocked(row.deployment.provider.base_url)
        if reason:
            log.warning("route %s: %s %s gets no traffic: %s", route.name, what, row.deployment.name, reason)
            rows.remove(row)
    return rows


def _route(route, keys, down, timeouts, shadows=None):
    rows = _servable(route, [t for t in route.targets.all() if t.weight > 0], "target")
    healthy = [t for t in rows if t.deployment_id not in down]
    # Probes see every target down: keep them all rather than send nothing.
    targets = tuple(_target(t, keys, timeouts) for t in (healthy or rows))
    totals, running = [], 0
    for target in targets:
        running += target.weight
        totals.append(running)
    weighted = {t.deployment_id for t in targets}
    links = _servable(route, [f for f in route.fallbacks.all() if f.deployment_id not in weighted], "fallback")
    up = [f for f in links if f.deployment_id not in down] or links
    fallbacks = tuple(_target(f, keys, timeouts, position) for position, f in enumerate(up, start=1))
    windows = any(t.context_window for t in (*targets, *fallbacks))
    rollout = route.pk in shadows if shadows else False
    shadow = _shadow(route, keys, shadows, timeouts) if rollout and shadows[route.pk] else None
    eligible, refused = _continuation(route, (*(healthy or rows), *up))
    return RouteInfo(route.pk, route.name, route.version, targets, tuple(totals),
                     continue_streams=eligible, no_continuation=refused, fallbacks=fallbacks, windows=windows,
                     shadow=shadow, sticky=not rollout)


def _continuation(route, rows):
    """Return (whether a broken stream may be continued, frozenset of deployment ids never sent a continuation)
    for the route's serving `rows` (targets and fallbacks), by its ContinueStreams and their prefill support."""
    mode = ContinueStreams(route.continue_streams)
    allowed = {row.deployment_id for row in rows if mode.allows(row.deployment.prefill)}
    others = frozenset(row.deployment_id for row in rows) - allowed
    return bool(allowed) and len(rows) > 1, others


def with_learned_window(snapshot, deployment_id, tokens):
    """Return `snapshot` with the window `tokens` a provider's error stated on every target of the deployment
    whose window was not typed (the gateway's own copy until the saved window comes back in a rebuild)."""
    def learned(target):
        if target.deployment_id != deployment_id or target.window_source == WindowSource.TYPED:
            return target
        return replace(target, context_window=tokens, window_source=WindowSource.LEARNED)

    routes = {}
    for name, route in snapshot.routes.items():
        targets, fallbacks = tuple(map(learned, route.targets)), tuple(map(learned, route.fallbacks))
        windows = any(t.context_window for t in (*targets, *fallbacks))
        routes[name] = replace(route, targets=targets, fallbacks=fallbacks, windows=windows)
    return replace(snapshot, routes=routes)


def _client_keys():
    keys = {}
    for key in GatewayKey.objects.filter(enabled=True).prefetch_related("routes"):
        routes = frozenset(r.name for r in key.routes.all())
        keys[key.key_hash] = ClientKey(key.pk, key.name, key.prefix, key.all_routes, routes, key.rpm_limit)
    return keys


def first_token_timeouts(learned):
    """Return {deployment id: FirstTokenTimeout} of every deployment, from `learned` (first_token.learned())."""
    overrides = Deployment.objects.values_list("id", "first_token_timeout")
    return {pk: first_token.effective(override, learned.get(pk)) for pk, override in overrides}


def _trial_targets(routes):
    """Return {deployment id: a Target of it} over every route's targets and fallbacks (the first one met)."""
    found = {}
    for route in routes.values():
        for target in (*route.targets, *route.fallbacks):
            found.setdefault(target.deployment_id, target)
    return found


def build(version=1, learned=None):
    """Return a fresh Snapshot read from the database (sync; call it off the event loop).

    `learned` is first_token.learned() when the caller has it at hand (read from the rollups when None).
    """
    stamp = fingerprint()
    down = probe_down_deployments()
    keys = _keys_by_provider()
    timeouts = first_token_timeouts(first_token.learned() if learned is None else learned)
    ordered = RouteTarget.objects.select_related("deployment__provider").order_by("deployment__name")
    targets = Prefetch("targets", queryset=ordered)
    chains = Prefetch("fallbacks", queryset=RouteFallback.objects.select_related("deployment__provider"))
    shadows = _shadow_steps()
    routes = {r.name: _route(r, keys, down, timeouts, shadows)
              for r in Route.objects.prefetch_related(targets, chains)}
    by_id = {info.id: info for infos in keys.values() for info in infos}
    names = dict(Deployment.objects.values_list("id", "name"))
    circuits = {c.deployment_id: (c.state, c.since.timestamp(), c.reason) for c in DeploymentCircuit.objects.all()}
    return Snapshot(version, stamp, routes, _client_keys(), time.time(), down, by_id, names, circuits, timeouts,
                    _trial_targets(routes))


# --- keeping it fresh ------------------------------------------------------------

class SnapshotStore:
    """Holds the current Snapshot of one gateway and rebuilds it in a thread.

    `local_notices=False` ignores in-process notices (tests use it to prove
    that the Redis notice alone propagates a change).
    """

    def __init__(self, poll_s=None, redis_url=None, local_notices=True, on_swap=None):
        self.current = EMPTY
        self.poll_s = poll_s if poll_s is not None else settings.GATEWAY_SNAPSHOT_POLL_S
        self.redis_url = settings.REDIS_URL if redis_url is None else redis_url
        self.local_notices = local_notices
        self.on_swap = on_swap
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._threads = []
        self._version = 0
        self.db_answered_at = None  # time.monotonic() of the last successful config read (readiness)
        self.learned = None  # first_token.learned(), re-read every first_token.LEARN_EVERY_S
        self._learned_at = -first_token.LEARN_EVERY_S
        self.redis_listening = False  # subscribed to the change notices (readiness)
        self.database = OutageLog(log, "The database", "the gateway's config refresh")
        self.redis = OutageLog(log, "Redis", "the gateway's change notices")
        self._swap = threading.Lock()

    def load(self):
        """Build and install a snapshot now (sync); return it."""
        self._version += 1
        snapshot = build(self._version, self._learn(force=self.learned is None))
        self.db_answered_at = time.monotonic()
        with self._swap:
            previous, self.current = self.current, snapshot
        if self.on_swap is not None:
            self.on_swap(previous, snapshot)
        return snapshot

    def patch(self, change):
        """Install change(current snapshot): what this process learned before the database says it too.

        A rebuild from the database replaces it; one built before the change was saved may drop it for a
        moment (a wasted upstream call at worst), until the rebuild after the save.
        """
        with self._swap:
            self.current = change(self.current)

    def start(self):
        """Start the refresher thread (and the Redis listener with REDIS_URL)."""
        if self.local_notices:
            _listeners.add(self.changed)
        self._spawn(self._refresh_loop, "gateway-snapshot")
        if self.redis_url:
            self._spawn(self._listen_loop, "gateway-notices")

    def _spawn(self, target, name):
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout=2.0):
        _listeners.discard(self.changed)
        self._stop.set()
        self.changed.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _refresh_loop(self):
        try:
            while not self._stop.is_set():
                notified = self.changed.wait(self.poll_s)
                if self._stop.is_set():
                    break
                self.changed.clear()
                self._refresh(notified)
        finally:
            connections.close_all()

    def _refresh(self, notified):
        try:
            close_old_connections()
            # DEBUG keeps a thread's queries until a request starts, and none does in this thread: with the
            # flusher's, ~10 MB per million requests in a soak at c=50 (issue 8).
            reset_queries()
            stamp = fingerprint()
            self.db_answered_at = time.monotonic()
            if notified or stamp != self.current.fingerprint or self._timeouts_moved():
                self.load()
        except (OperationalError, InterfaceError) as exc:  # keep serving the last good snapshot
            self.database.failed(exc)
        except Exception:
            log.warning("gateway snapshot refresh failed; still serving version %s", self.current.version,
                        exc_info=True)
        else:
            self.database.answered()

    def _learn(self, force=False):
        """Return first_token.learned(), read again when it is older than first_token.LEARN_EVERY_S."""
        now = time.monotonic()
        if force or now - self._learned_at >= first_token.LEARN_EVERY_S:
            self.learned, self._learned_at = first_token.learned(), now
        return self.learned

    def _timeouts_moved(self):
        """Return True when newly learned first-token timeouts differ from the snapshot's (a rebuild applies them)."""
        if time.monotonic() - self._learned_at < first_token.LEARN_EVERY_S:
            return False
        timeouts = first_token_timeouts(self._learn())
        current = self.current.first_token
        return any(current.get(pk) is None or current[pk].seconds != t.seconds for pk, t in timeouts.items())

    def _listen_loop(self):
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=2)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self.changed.set()  # catch up on anything missed while not listening
                self.redis_listening = True
                self.redis.answered()
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self.changed.set()
                pubsub.close()
                client.close()
            except Exception as exc:
                self.redis_listening = False
                self.redis.failed(exc)  # logged once per outage; retried every second
                self._stop.wait(1.0)
        self.redis_listening = False
