"""The one module that publishes live events to open dashboards.

Producers (probes, the gateway's rollup flusher, weight changes, health and
circuit events) call the typed functions below; consumers only relay.
Publishing never raises: a missing or broken channel layer degrades to a no-op.
The functions may be called from sync code in any thread and from async code
running on the server's event loop.
"""

import asyncio
import logging
from dataclasses import asdict, dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import m2m_changed, post_save
from django.dispatch import receiver

from dashboard.redis_guard import Outage

log = logging.getLogger(__name__)

GROUP_ALL = "dashboard"  # every signed-in dashboard socket joins this group

# Message types (each consumer handler is named after its type, dots → underscores).
PROBE_RESULT = "probe.result"
TRAFFIC_POINT = "traffic.point"
WEIGHTS_CHANGED = "weights.changed"
TIMELINE_EVENT = "timeline.event"
HEALTH_CHANGED = "health.changed"
LOADTEST_PROGRESS = "loadtest.progress"
ROLLOUT_CHANGED = "rollout.changed"
ALERTS_CHANGED = "alerts.changed"
SESSION_LOGOUT = "session.logout"  # sent to one user's group only: closes their sockets
RIGHTS_CHANGED = "rights.changed"  # sent to one user's group only: their sockets re-check the user's rights

# The loop the consumers run on (set when a socket connects). The in-memory
# layer's queues belong to that loop, so other threads must hand it their sends.
_consumer_loop = None
_in_flight = set()  # background sends started from async code (kept so they are not collected)
_outage = Outage("live dashboard updates")


def user_group(user_id):
    """Return the group every socket of one user joins (so logout can close them)."""
    return f"user.{user_id}"


def bind_loop(loop):
    """Remember the event loop the consumers run on (called by the consumer)."""
    global _consumer_loop
    _consumer_loop = loop


def _deliver(layer, group, message):
    loop = _consumer_loop
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if isinstance(layer, InMemoryChannelLayer) and loop is not None and loop.is_running() and running is not loop:
        # The in-memory layer's asyncio queues belong to the consumers' loop: a put
        # from another thread is not thread-safe and would not wake that loop.
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(timeout=5)
    elif running is not None:
        # Called from async code: async_to_sync would refuse; send in the background.
        task = running.create_task(_group_send(layer, group, message))
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)
    else:
        async_to_sync(_group_send)(layer, group, message)


async def _group_send(layer, group, message):
    """Send to a group; over Redis at most twice WEATHERVANE_REDIS_TIMEOUT (a request may be waiting on it)."""
    if isinstance(layer, InMemoryChannelLayer):
        await layer.group_send(group, message)
        return
    try:
        async with asyncio.timeout(2 * settings.REDIS_TIMEOUT_S):
            await layer.group_send(group, message)
    except Exception as error:  # a hung or refusing Redis: skip live updates for a while (pages backfill)
        _outage.failed(error)
    else:
        _outage.answered()


def _send(message_type, payload, group=GROUP_ALL):
    layer = get_channel_layer()
    if layer is None or (_outage.skip() and not isinstance(layer, InMemoryChannelLayer)):
        return
    try:
        _deliver(layer, group, {"type": message_type, "payload": payload})
    except Exception:  # a dashboard update must never break the caller
        log.warning("live publish of %s failed", message_type, exc_info=True)


# --- typed payloads: one per message type (times are ISO strings) -----------------------


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    deployment: str
    outcome: str
    at: str
    target: int | None = None
    api_key: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tps: float | None = None
    model_swapped: bool = False
    recorded_at: str | None = None


@dataclass(frozen=True, kw_only=True)
class TrafficPoint:
    """One route's traffic through one deployment in one minute (figures as in probes.rollups)."""

    deployment: str
    route: str
    minute: str
    count: int
    ok: int = 0
    errors: dict = field(default_factory=dict)
    p50_ms: float | None = None
    p95_ms: float | None = None
    ttft_p50_ms: float | None = None
    at: str | None = None


@dataclass(frozen=True, kw_only=True)
class WeightsChanged:
    route: str
    version: int
    weights: dict
    actor: str
    reason: str
    at: str | None = None
    fallbacks: list | None = None  # the route's fallback chain (deployment names, in order) after the change


@dataclass(frozen=True, kw_only=True)
class HealthChanged:
    deployment: str
    state: str
    reason: str
    at: str | None = None
    api_key: str | None = None
    target: int | None = None


@dataclass(frozen=True, kw_only=True)
class RolloutChanged:
    """A staged rollout changed state or step (one RolloutTransition)."""

    rollout: int
    route: str
    canary: str
    state: str
    step: int
    actor: str
    reason: str
    at: str | None = None


@dataclass(frozen=True, kw_only=True)
class AlertsChanged:
    """The alert engine's counts changed (or it sent notifications): pages re-read the alerts."""

    firing: int  # firing and not silenced, inhibited or in maintenance: the navigation bar's count
    pending: int
    at: str | None = None


def probe_result(payload: ProbeResult):
    _send(PROBE_RESULT, asdict(payload))


def traffic_point(payload: TrafficPoint):
    _send(TRAFFIC_POINT, asdict(payload))


def weights_changed(payload: WeightsChanged):
    _send(WEIGHTS_CHANGED, asdict(payload))


def health_changed(payload: HealthChanged):
    _send(HEALTH_CHANGED, asdict(payload))


def rollout_changed(payload: RolloutChanged):
    _send(ROLLOUT_CHANGED, asdict(payload))


def alerts_changed(payload: AlertsChanged):
    _send(ALERTS_CHANGED, asdict(payload))


def timeline_event(event):
    """Push a saved routing.models.Event: its payload is `Event.payload()`, as the page and the API show it."""
    _send(TIMELINE_EVENT, event.payload())


def loadtest_progress(payload):
    """payload: {run, status, status_label, progress: {done, planned, ok, errors, rps, elapsed_s, ...}, passed, at}"""
    _send(LOADTEST_PROGRESS, payload)


def session_logout(user_id):
    """Close every open dashboard socket of this user."""
    _send(SESSION_LOGOUT, {"user": user_id}, group=user_group(user_id))


def rights_changed(user_id):
    """Have every open dashboard socket of this user re-check that the user may still watch."""
    _send(RIGHTS_CHANGED, {"user": user_id}, group=user_group(user_id))


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="dashboard.live.recheck_on_user_save")
def _recheck_on_user_save(sender, instance, created=False, update_fields=None, **kwargs):
    if not created and set(update_fields or ()) != {"last_login"}:  # every login saves last_login
        rights_changed(instance.pk)


@receiver(m2m_changed, dispatch_uid="dashboard.live.recheck_on_group_change")
def _recheck_on_group_change(sender, instance, action, reverse, pk_set=None, **kwargs):
    if action not in ("post_remove", "post_clear") or sender._meta.label != "auth.User_groups":
        return
    user_ids = (pk_set or ()) if reverse else (instance.pk,)
    for user_id in user_ids:
        rights_changed(user_id)


@receiver(user_logged_out, dispatch_uid="dashboard.live.close_sockets_on_logout")
def _close_sockets_on_logout(sender, user=None, **kwargs):
    if user is not None and user.pk is not None:
        session_logout(user.pk)
