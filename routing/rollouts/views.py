"""The rollout pages: the list, one rollout's detail with its charts and gates, and the JSON the detail re-reads
when the live socket (re)connects. Built from the API's serializers, so page and API agree."""

from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import metrics
from dashboard.views import _json, _page, dashboard_view
from routing.weights import MAX_REASON_LENGTH, WeightsInvalid

from . import controller
from .api.serializers import RolloutDetailSerializer, RolloutSerializer
from .models import ACTIVE_STATES, FINISHED_STATES, Rollout

ROLLOUTS_SHOWN = 50
ROLLOUT_REFRESH_S = 5  # the detail page re-reads its charts at most this often while traffic arrives
ROLLOUT_AFTERMATH = timedelta(minutes=5)  # a finished rollout's charts show this long after its end
GATE_LABELS = {"start": "Start", "approve": "Approve next step", "pause": "Pause", "resume": "Resume",
               "promote": "Promote now", "abort": "Abort (roll back)", "retry": "Retry"}


def rollouts_data():
    """Return the active rollouts and the most recent others, as the REST API lists them."""
    rows = list(Rollout.objects.select_related("route", "canary")[:ROLLOUTS_SHOWN])
    active = [r for r in rows if r.state in ACTIVE_STATES]
    recent = [r for r in rows if r.state not in ACTIVE_STATES]
    return {"active": RolloutSerializer(active, many=True).data, "recent": RolloutSerializer(recent, many=True).data}


def rollout_data(rollout):
    """Return one rollout as the API's detail shows it, plus the gates that apply now."""
    data = RolloutDetailSerializer(rollout).data
    data["gates"] = [{"name": name, "label": GATE_LABELS[name]}
                     for name, states in controller.GATES.items() if rollout.state in states]
    data["charts"] = metrics.rollout_series(rollout.route_id, rollout.canary_id, _charts_until(rollout))
    data["refresh_s"] = ROLLOUT_REFRESH_S
    return data


def _charts_until(rollout, now=None):
    """A rollout's charts end now while it is active (or a draft); a finished one's a few minutes after its end."""
    now = now or timezone.now()
    if rollout.state in FINISHED_STATES:
        return min(now, rollout.updated_at + ROLLOUT_AFTERMATH)
    return now


@dashboard_view
def rollouts(request):
    return _page(request, "rollouts/rollouts.html", rollouts_data())


@dashboard_view
def rollout_detail(request, pk):
    return _page(request, "rollouts/rollout.html", rollout_data(get_object_or_404(Rollout, pk=pk)))


@dashboard_view
def rollout_json(request, pk):
    return _json(rollout_data(get_object_or_404(Rollout, pk=pk)))


@require_POST
@dashboard_view
def rollout_gate(request, pk, gate):
    """Press a gate from the page (staff only); answer the page again with the problem when it is refused."""
    if not request.user.is_staff:
        raise PermissionDenied("Only staff can press a rollout's gates; viewers can look.")
    rollout = get_object_or_404(Rollout, pk=pk)
    reason = request.POST.get("reason", "").strip()
    if gate not in controller.GATES:
        return HttpResponseBadRequest("Unknown gate.")
    problem, status = _press(rollout, gate, reason, request.user)
    if problem is None:
        return redirect("rollout", pk=pk)
    rollout.refresh_from_db()
    response = _page(request, "rollouts/rollout.html", rollout_data(rollout), problem=problem)
    response.status_code = status
    return response


def _press(rollout, gate, reason, user):
    """Return (None, 200) when the gate was pressed, else (the problem in words, HTTP status)."""
    if not reason or len(reason) > MAX_REASON_LENGTH:
        return f"Say why (1 to {MAX_REASON_LENGTH} characters); the reason is kept in the audit trail.", 400
    try:
        controller.gate(rollout.pk, gate, reason=reason, actor=user.get_username(), user=user)
    except controller.GateRefused as exc:
        return str(exc), 409
    except WeightsInvalid as exc:
        return str(exc), 400
    return None, 200
