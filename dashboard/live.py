"""The one module that publishes live events to open dashboards.

Producers (probes, the gateway's rollup flusher, weight changes, health and
circuit events) call the typed functions below; consumers only relay.
Publishing never raises: a missing or broken channel layer degrades to a no-op.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

GROUP_ALL = "dashboard"  # every signed-in dashboard socket joins this group

# Message types (each consumer handler is named after its type, dots → underscores).
PROBE_RESULT = "probe.result"
TRAFFIC_POINT = "traffic.point"
WEIGHTS_CHANGED = "weights.changed"
TIMELINE_EVENT = "timeline.event"
HEALTH_CHANGED = "health.changed"


def _send(message_type, payload):
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(GROUP_ALL, {"type": message_type, "payload": payload})
    except Exception:  # a dashboard update must never break the caller
        log.warning("live publish of %s failed", message_type, exc_info=True)


def probe_result(payload):
    """payload: {deployment, api_key, outcome, latency_ms, ttft_ms, tps, at (ISO time)}"""
    _send(PROBE_RESULT, payload)


def traffic_point(payload):
    """payload: {deployment, route, minute, count, ok, errors, p50_ms, p95_ms, ttft_p50_ms, at}"""
    _send(TRAFFIC_POINT, payload)


def weights_changed(payload):
    """payload: {route, version, weights: {deployment: weight}, actor, reason, at}"""
    _send(WEIGHTS_CHANGED, payload)


def health_changed(payload):
    """payload: {deployment, api_key, state, reason, at}"""
    _send(HEALTH_CHANGED, payload)


def timeline_event(payload):
    """payload: {kind, message, deployment, route, api_key, at}"""
    _send(TIMELINE_EVENT, payload)
