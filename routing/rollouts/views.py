"""The rollout pages: the list, one rollout's detail with its charts and gates, and the JSON the detail re-reads
when the live socket (re)connects. Built from the API's serializers, so page and API agree."""

from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import metrics
from dashboard.roles import can_draft_rollouts, can_press_gate
from dashboard.views import _json, _page, dashboard_view
from routing.audit import actor_name
from routing.models import Route
from routing.weights import MAX_REASON_LENGTH, WeightsInvalid

from . import controller, form
from .analysis import Metric
from .api.serializers import RolloutDetailSerializer, RolloutSerializer
from .models import ACTIVE_STATES, FINISHED_STATES, Rollout, RolloutState

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


def _rollout_page(request, template, data, **context):
    """Render a rollout page with what this user may do: draft rollouts, and which of the gates that apply now
    they may press (the API's rule, dashboard.roles)."""
    pressable = [g for g in data.get("gates", []) if can_press_gate(request.user, g["name"])]
    return _page(request, template, data, can_draft=can_draft_rollouts(request.user), pressable=pressable, **context)


def rollout_data(rollout):
    """Return one rollout as the API's detail shows it, plus the gates that apply now, the latest verdict's
    evidence per guard and when the current step times out."""
    data = RolloutDetailSerializer(rollout).data
    data["gates"] = [{"name": name, "label": GATE_LABELS[name]}
                     for name, states in controller.GATES.items() if rollout.state in states]
    data["charts"] = metrics.rollout_series(rollout.route_id, rollout.canary_id, _charts_until(rollout))
    data["refresh_s"] = ROLLOUT_REFRESH_S
    data["guard_evidence"] = guard_evidence(data["verdicts"])
    data["step_deadline"] = _step_deadline(rollout)
    data["active"] = rollout.is_active()
    return data


def _step_deadline(rollout):
    """When a running step times out (its start plus step_timeout_s), as ISO text; None when no clock runs."""
    if rollout.state != RolloutState.RUNNING or rollout.step_started_at is None:
        return None
    return (rollout.step_started_at + timedelta(seconds=rollout.step_timeout_s)).isoformat()


def guard_evidence(verdicts):
    """Return the latest verdict's guards as the detail page shows them: {metric, label, verdict, sentence,
    progress ({fail, pass} in whole percent, or None), numbers ([name, text])}; [] before any verdict."""
    if not verdicts:
        return []
    latest = verdicts[0]
    rows = [_guard_row(m) for m in (latest.get("evidence") or {}).get("metrics") or []]
    return [row | {"step": latest["step"]} for row in rows]


def _guard_row(judged):
    evidence = judged.get("evidence") or {}
    progress = judged.get("progress") or evidence.get("progress")
    label = Metric(judged["metric"]).label if judged["metric"] in Metric.values else judged["metric"]
    return {"metric": judged["metric"], "label": label, "verdict": judged.get("verdict"),
            "sentence": judged.get("sentence", ""), "progress": _percents(progress), "numbers": _numbers(evidence)}


def _percents(progress):
    if not isinstance(progress, dict):
        return None
    return {side: round(100 * min(1.0, max(0.0, float(progress.get(side) or 0)))) for side in ("fail", "pass")}


def _numbers(evidence):
    """Flatten one level of evidence into [name, text] pairs (the analysis owns its fields; the page shows them)."""
    pairs = []
    for name, value in evidence.items():
        if name == "progress":
            continue
        inner = value.items() if isinstance(value, dict) else [("", value)]
        pairs += [[f"{name} {key}".strip().replace("_", " "), _text(v)] for key, v in inner]
    return pairs


def _text(value):
    if value is None or isinstance(value, bool | str):
        return {None: "–", True: "yes", False: "no"}.get(value, value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _charts_until(rollout, now=None):
    """A rollout's charts end now while it is active (or a draft); a finished one's a few minutes after its end."""
    now = now or timezone.now()
    if rollout.state in FINISHED_STATES:
        return min(now, rollout.updated_at + ROLLOUT_AFTERMATH)
    return now


@dashboard_view
def rollouts(request):
    return _rollout_page(request, "rollouts/rollouts.html", rollouts_data())


@dashboard_view
def rollout_detail(request, pk):
    return _rollout_page(request, "rollouts/rollout.html", rollout_data(get_object_or_404(Rollout, pk=pk)))


@dashboard_view
def rollout_json(request, pk):
    return _json(rollout_data(get_object_or_404(Rollout, pk=pk)))


@require_POST
@dashboard_view
def rollout_gate(request, pk, gate):
    """Press a gate from the page (with the API's permissions); answer the page again with the problem when it is
    refused."""
    if not can_press_gate(request.user, gate):
        raise PermissionDenied("Pressing this gate needs the rollout permission (and the weights permission for a "
                               "gate that moves traffic); viewers can look.")
    rollout = get_object_or_404(Rollout, pk=pk)
    reason = request.POST.get("reason", "").strip()
    if gate not in controller.GATES:
        return HttpResponseBadRequest("Unknown gate.")
    problem, status = _press(rollout, gate, reason, request.user)
    if problem is None:
        return redirect("rollout", pk=pk)
    rollout.refresh_from_db()
    response = _rollout_page(request, "rollouts/rollout.html", rollout_data(rollout), problem=problem)
    response.status_code = status
    return response


def _press(rollout, gate, reason, user):
    """Return (None, 200) when the gate was pressed, else (the problem in words, HTTP status)."""
    if not reason or len(reason) > MAX_REASON_LENGTH:
        return f"Say why (1 to {MAX_REASON_LENGTH} characters); the reason is kept in the audit trail.", 400
    try:
        controller.gate(rollout.pk, gate, reason=reason, actor=actor_name(user), user=user)
    except controller.GateRefused as exc:
        return str(exc), 409
    except WeightsInvalid as exc:
        return str(exc), 400
    return None, 200


# --- New rollout ------------------------------------------------------------------


def form_data():
    """Return what the form's script needs: each route's targets (the canary choices) and active rollout, and the
    plan templates."""
    routes = Route.objects.prefetch_related("targets__deployment").order_by("name")
    return {
        "routes": {r.name: {"targets": [{"name": t.deployment.name, "weight": t.weight} for t in r.targets.all()],
                            "rollout": _active_id(r)} for r in routes},
        "templates": form.PLAN_TEMPLATES,
    }


def _active_id(route):
    rollout = controller.active_rollout(route.pk)
    return rollout.pk if rollout else None


@dashboard_view
def new_rollout(request):
    """The "New rollout" form (staff who may draft rollouts and move weights); a valid POST creates a draft,
    audited as the API does, and goes to its page; an invalid one answers 400 with each error by its field."""
    _require_runner(request.user)
    if request.method != "POST":
        return _form_page(request, form.initial_state(request.GET.get("route", "")))
    state, layout, serializer = _checked(request.POST)
    if serializer.errors:
        return _form_page(request, state, form.field_errors(serializer.errors, layout), status=400)
    rollout = serializer.save_draft(request.user)
    return redirect("rollout", pk=rollout.pk)


@require_POST
@dashboard_view
def preview_rollout(request):
    """The form's time-to-decision preview: the API's dry run (RolloutSerializer.forecast) of the form as it
    stands, read through the form's own translation. Answers {forecast, step_rows: plan index → form row}, or 400
    with {errors} keyed as the form shows them."""
    _require_runner(request.user)
    _, layout, serializer = _checked(request.POST)
    if serializer.errors:
        return JsonResponse({"errors": form.field_errors(serializer.errors, layout)}, status=400)
    return _json({"forecast": serializer.forecast(), "step_rows": layout.step_rows})


def _require_runner(user):
    if not can_draft_rollouts(user):
        raise PermissionDenied("Only staff who may create rollouts and move weights can draft a rollout.")


def _checked(post):
    """Return (FormState, Layout, RolloutSerializer after is_valid) of a POSTed form: the API's own validation."""
    state = form.posted_state(post)
    body, layout = form.body(state)
    serializer = RolloutSerializer(data=body)
    serializer.is_valid()
    return state, layout, serializer


def _form_page(request, state, errors=None, status=200):
    data = form_data()
    canaries = _canary_choices(data["routes"], state.route)
    response = _page(request, "rollouts/new.html", data, state=state, errors=errors or {"steps": {}, "guard": {}},
                     canaries=canaries, templates=form.PLAN_TEMPLATES)
    response.status_code = status
    return response


def _canary_choices(routes, route):
    """The chosen route's targets, the lightest first (the likely canary); every route's without a choice."""
    targets = routes[route]["targets"] if route in routes else [t for r in routes.values() for t in r["targets"]]
    names = [t["name"] for t in sorted(targets, key=lambda t: (t["weight"], t["name"]))]
    return list(dict.fromkeys(names))
