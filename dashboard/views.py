"""Dashboard pages and the JSON they are built from (rollouts and alerts keep theirs in their own apps).

Each page renders its data server-side and embeds the same dict with
`json_script`; its JS re-reads the matching /dashboard-data/ view when the
live socket (re)connects, so charts have no gaps. Staff may change things,
the viewer group only looks, anyone else signed in gets 403.
"""

from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard import metrics, timeline
from dashboard.roles import can_draft_rollouts, can_move_weights, is_viewer
from probes.loadtest import reports as loadtest_reports
from probes.loadtest.models import LoadTestRun
from probes.loadtest.profiles import ProfileKind
from probes.models import HealthState, ProbeResult
from routing import first_token, tokens
from routing.audit import actor_name
from routing.models import ApiToken, ContinueStreams, Deployment, EventKind, Route, WindowSource
from routing.outcomes import Outcome
from routing.rollouts import controller
from routing.rollouts.models import LOCKING_STATES
from routing.weights import describe_chain_change, weights_history

HISTORY_SIZE = 10
RECENT_PROBES = 20


def dashboard_view(view):
    """Require a signed-in staff member or viewer (anonymous → login, others → 403)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not is_viewer(request.user):
            raise PermissionDenied("Only staff and members of the viewer group may see the dashboard.")
        return view(request, *args, **kwargs)

    return wrapper


def _json(data):
    return JsonResponse(data, encoder=DjangoJSONEncoder)


def _page(request, template, data, **context):
    return render(request, template, {"data": data, "can_change": can_move_weights(request.user), **context})


def _circuit(deployment):
    try:
        return deployment.circuit
    except Deployment.circuit.RelatedObjectDoesNotExist:
        return None


def _deployments():
    return list(Deployment.objects.select_related("provider", "circuit").order_by("name"))


def _health(deployments):
    probes = metrics.probe_health([d.pk for d in deployments])
    return {d.pk: metrics.deployment_health(d, probes.get(d.pk, []), _circuit(d)) for d in deployments}


# --- Overview -------------------------------------------------------------------


def overview_data(now=None):
    """Return the overview: a tile per deployment and every route's split."""
    now = now or timezone.now()
    deployments = _deployments()
    ids = [d.pk for d in deployments]
    stats = metrics.figures_by_deployment(ids, now - metrics.TILE_SPAN)
    sparks = metrics.sparklines(ids, now)
    health = _health(deployments)
    traffic = metrics.route_figures(now)
    return {
        "deployments": [_tile(d, stats[d.pk], sparks[d.pk], *health[d.pk]) for d in deployments],
        "routes": [_split(route, traffic) for route in Route.objects.prefetch_related("targets__deployment")],
        "at": now.isoformat(),
    }


def _tile(deployment, stats, spark, state, reason):
    return {
        "name": deployment.name, "label": deployment.display_name or deployment.name,
        "provider": deployment.provider.name, "model": deployment.upstream_model,
        "state": state, "state_label": HealthState(state).label, "reason": reason,
        "p50": stats["p50_ms"], "p95": stats["p95_ms"], "ttft": stats["ttft_p50_ms"],
        "error_rate": stats["error_rate"], "tps": stats["tokens_per_s"], "count": stats["count"],
        "spark": spark,
    }


def _split(route, traffic):
    """A route's split with its traffic: requests/s over the last minute, deployment error rate and p95 over
    15 minutes (metrics.route_figures), and its active rollout."""
    targets = sorted(route.targets.all(), key=lambda t: (-t.weight, t.deployment.name))
    figures = traffic.get(route.pk, metrics.NO_ROUTE_TRAFFIC)
    return {"name": route.name, "version": route.version,
            "targets": [{"deployment": t.deployment.name, "weight": t.weight} for t in targets],
            "rps": figures["rps"], "error_rate": figures["error_rate"], "p95": figures["p95_ms"],
            "rollout": _active_rollout(route)}


@dashboard_view
def overview(request):
    data = overview_data()
    problems = [t for t in data["deployments"] if t["state"] in (HealthState.DOWN, HealthState.DEGRADED)]
    return _page(request, "dashboard/overview.html", data, problems=problems, speed_rule=metrics.SPEED_RULE)


@dashboard_view
def overview_json(request):
    return _json(overview_data())


# --- Deployment detail ----------------------------------------------------------


def deployment_data(deployment, window, now=None):
    """Return one deployment's charts over `window`, its keys' health, recent probes and the first-token timeout
    the gateway applies to it."""
    now = now or timezone.now()
    probes = metrics.probe_health([deployment.pk]).get(deployment.pk, [])
    state, reason = metrics.deployment_health(deployment, probes, _circuit(deployment))
    totals, series = metrics.series(deployment.pk, window, now)
    return {
        "name": deployment.name, "label": deployment.display_name or deployment.name,
        "provider": deployment.provider.name, "model": deployment.upstream_model,
        "state": state, "state_label": HealthState(state).label, "reason": reason,
        "window": window.value, "window_label": window.label, "refresh_s": metrics.REFRESH_S[window],
        "bucket_ms": int(metrics.BUCKET[window].total_seconds() * 1000),
        "span_ms": int(metrics.SPAN[window].total_seconds() * 1000),
        "totals": totals, "series": series,
        "keys": [metrics.key_health(k, probes) for k in deployment.provider.keys.order_by("label")],
        "prefill": _prefill(deployment),
        "probes": [_probe_row(r) for r in _recent_probes(deployment)],
        "first_token": first_token.in_effect(deployment).as_dict(),
        "context": context_window_data(deployment),
        "at": now.isoformat(),
    }


def context_window_data(deployment):
    """Return the deployment's context window in use, where it came from, and what every source says."""
    tokens, source = deployment.window()
    details = {
        WindowSource.TYPED: "typed by staff (always wins)",
        WindowSource.LEARNED: _learned_detail(deployment),
        WindowSource.PROVIDER: "the provider's GET /models",
        WindowSource.CATALOGUE: deployment.catalogue_entry,
    }
    rows = [{"source": s, "label": WindowSource(s).label, "tokens": t, "detail": details[s] if t else "",
             "used": s == source} for s, t in deployment.windows().items()]
    checked = deployment.windows_checked_at
    return {"tokens": tokens, "source": source, "source_label": WindowSource(source).label, "sources": rows,
            "note": deployment.windows_note, "checked_at": checked.isoformat() if checked else None}


def _learned_detail(deployment):
    if not deployment.learned_window_at:
        return deployment.learned_window_error
    return f"{deployment.learned_window_error} ({deployment.learned_window_at:%Y-%m-%d %H:%M} UTC)"


def _prefill(deployment):
    """Return whether the deployment continues an assistant prefill, as its probe last found (probes.prefill)."""
    support = deployment.prefill
    checked = deployment.prefill_checked
    return {"support": support.value, "label": support.label, "detail": deployment.prefill_detail,
            "checked_at": checked.isoformat() if checked else None}


def _recent_probes(deployment):
    return ProbeResult.objects.filter(deployment=deployment).select_related("api_key")[:RECENT_PROBES]


def _probe_row(result):
    return {
        "at": result.started_at.isoformat(), "key": result.api_key.label if result.api_key else "",
        "outcome": result.outcome, "ok": result.outcome == Outcome.OK, "status": result.status_code,
        "ttft_ms": result.ttft_ms, "total_ms": result.total_ms,
        "tps": metrics.measurable_speed(result.tokens_per_s, result.tokens_out), "error": result.error,
    }


def _window_or_400(request, as_json=False):
    """Return (Window, None), or (None, a 400 response naming the `window` parameter)."""
    try:
        return metrics.parse_window(request.GET.get("window")), None
    except ValueError as problem:
        if as_json:
            return None, JsonResponse({"window": [str(problem)]}, status=400)
        return None, HttpResponseBadRequest(str(problem), content_type="text/plain; charset=utf-8")


@dashboard_view
def deployment_detail(request, name):
    deployment = get_object_or_404(Deployment.objects.select_related("provider"), name=name)
    window, bad = _window_or_400(request)
    if bad:
        return bad
    return _page(request, "dashboard/deployment.html", deployment_data(deployment, window),
                 deployment=deployment, windows=metrics.Window.choices, speed_rule=metrics.SPEED_RULE)


@dashboard_view
def deployment_json(request, name):
    deployment = get_object_or_404(Deployment.objects.select_related("provider"), name=name)
    window, bad = _window_or_400(request, as_json=True)
    return bad or _json(deployment_data(deployment, window))


# --- Routes ---------------------------------------------------------------------


def routes_data(now=None):
    """Return every route's targets with weight and real traffic, its fallbacks and recent changes, and every
    deployment's name (what a fallback may be). Share and requests/s cover the last minute; errors and latency
    the last 15 minutes; `chart` is each route's traffic per target and minute over the last half hour."""
    now = now or timezone.now()
    routes = list(Route.objects.prefetch_related("targets__deployment__provider", "fallbacks__deployment__provider"))
    deployments = {t.deployment.pk: t.deployment for r in routes for t in r.targets.all()}
    window = metrics.Window.M15
    health = _health(list(deployments.values()))
    return {
        "window": window.value, "window_label": window.label, "at": now.isoformat(),
        "routes": [_route_row(r, now, health) for r in routes],
        "deployments": list(Deployment.objects.order_by("name").values_list("name", flat=True)),  # fallback choices
    }


def _route_row(route, now, health):
    """One route with its own traffic per target (a deployment serving two routes is counted in each once)."""
    targets = sorted(route.targets.all(), key=lambda t: t.deployment.name)
    rows = metrics.route_rows(route.pk, now - metrics.ROUTE_CHART_SPAN)
    traffic = metrics.figures_by_deployment_of(rows, [t.deployment_id for t in targets], now - metrics.TILE_SPAN)
    recent = metrics.last_minute(rows, now)
    total = sum(recent[t.deployment_id] for t in targets)
    return {
        "name": route.name, "description": route.description, "version": route.version,
        "continue_streams": route.continue_streams, "continues_on": _continues_on(route, targets),
        "targets": [_target_row(t, traffic[t.deployment_id], health[t.deployment_id], recent[t.deployment_id], total)
                    for t in targets],
        "fallbacks": [_fallback_row(f) for f in route.fallbacks.all()],
        "history": _history(route),
        "rollout": _active_rollout(route),
        "chart": metrics.route_chart(rows, {t.deployment_id: t.deployment.name for t in targets}, now),
    }


def _active_rollout(route):
    """Return {id, state, canary, locking} of the route's active rollout, or None; `locking`: it holds the wheel
    (manual weight changes are refused until it is paused)."""
    rollout = controller.active_rollout(route.pk)
    if rollout is None:
        return None
    return {"id": rollout.pk, "state": rollout.state, "canary": rollout.canary.name,
            "locking": rollout.state in LOCKING_STATES}


def _continues_on(route, targets):
    """Return the names of the route's deployments a broken stream may be continued on (its continue_streams and
    their prefill support, as the gateway's snapshot decides)."""
    mode = ContinueStreams(route.continue_streams)
    deployments = [t.deployment for t in targets if t.weight > 0] + [f.deployment for f in route.fallbacks.all()]
    if len(deployments) < 2:  # a lone target has nobody to continue its streams
        return []
    return [d.name for d in deployments if mode.allows(d.prefill)]


def _fallback_row(link):
    deployment = link.deployment
    return {"position": link.position, "deployment": deployment.name,
            "enabled": deployment.enabled and deployment.provider.enabled}


def _target_row(target, figures, health, recent, total):
    """`recent`: the target's requests over the last minute, of `total` on its route; `figures`: 15 minutes'."""
    deployment = target.deployment
    return {
        "deployment": deployment.name, "weight": target.weight,
        "enabled": deployment.enabled and deployment.provider.enabled,
        "state": health[0], "state_label": HealthState(health[0]).label,
        "share": recent / total if total else None, "count": figures["count"],
        "rps": metrics.rate_per_s(recent), "error_rate": figures["error_rate"],
        "p50": figures["p50_ms"], "p95": figures["p95_ms"],
    }


def _history(route):
    """Return the last HISTORY_SIZE weights changes of `route`, newest first; `fallbacks` summarises a chain change."""
    return [
        {"at": e.created_at.isoformat(), "actor": e.actor, "reason": e.reason,
         "before": (e.before or {}).get("weights"), "after": (e.after or {}).get("weights"),
         "fallbacks": _chain_change(e.before or {}, e.after or {})}
        for e in weights_history(route)[:HISTORY_SIZE]
    ]


def _chain_change(before, after):
    chain_before = before.get("fallbacks") or []
    chain = after.get("fallbacks") or []
    return describe_chain_change(chain_before, chain) if chain_before != chain else None


@dashboard_view
def routes(request):
    return _page(request, "dashboard/routes.html", routes_data(), can_draft=can_draft_rollouts(request.user))


@dashboard_view
def routes_json(request):
    return _json(routes_data())


# --- Timeline -------------------------------------------------------------------


def timeline_data(params=None):
    """Return one page of the timeline for query `params` (dashboard.timeline: filters, cursor, folded runs);
    raise timeline.BadQuery naming a bad parameter."""
    return timeline.page(timeline.parse(params or {}))


@dashboard_view
def timeline_page(request):
    try:
        data = timeline_data(request.GET)
    except timeline.BadQuery as problem:
        return HttpResponseBadRequest(str(problem), content_type="text/plain; charset=utf-8")
    return _page(request, "dashboard/timeline.html", data, groups=timeline.groups(data["events"]),
                 query=urlencode(data["filters"]), kinds=EventKind.choices,
                 routes=Route.objects.values_list("name", flat=True),
                 deployments=Deployment.objects.order_by("name").values_list("name", flat=True))


@dashboard_view
def timeline_json(request):
    try:
        return _json(timeline_data(request.GET))
    except timeline.BadQuery as problem:
        return JsonResponse(problem.errors, status=400)


# --- Load tests -------------------------------------------------------------------

LOAD_TEST_ROWS = 50


def load_tests_data():
    """Return the latest runs and what a new one can target."""
    runs = LoadTestRun.objects.select_related("created_by")[:LOAD_TEST_ROWS]
    return {
        "runs": [_load_test_row(run) for run in runs],
        "routes": list(Route.objects.values_list("name", flat=True)),
        "deployments": list(Deployment.objects.filter(enabled=True).values_list("name", flat=True)),
        "profiles": ProfileKind.choices,
    }


def _load_test_row(run):
    summary = run.summary()
    return {
        "id": run.pk, "target": run.target_label, "status": run.status, "status_label": run.get_status_display(),
        "passed": run.passed, "created_at": run.created_at.isoformat(), "progress": run.progress or {},
        "created_by": run.created_by.username if run.created_by else "command line",
        "count": summary.get("count"), "rps": summary.get("rps"), "error_rate": summary.get("error_rate"),
        "p95_ttft": (summary.get("ttft") or {}).get("p95"), "p95_e2e": (summary.get("e2e") or {}).get("p95"),
        "cost_per_1k": summary.get("cost_per_1k"),
    }


@dashboard_view
def load_tests(request):
    return _page(request, "dashboard/load_tests.html", load_tests_data())


@dashboard_view
def load_tests_json(request):
    return _json(load_tests_data())


def load_test_data(run):
    document = loadtest_reports.document(run)
    if run.active:  # the samples come with the figures, once the run ended
        document["result"] = {k: v for k, v in document["result"].items() if k != "samples"}
    return document


@dashboard_view
def load_test_detail(request, pk):
    run = get_object_or_404(LoadTestRun, pk=pk)
    document = load_test_data(run)
    return _page(request, "dashboard/load_test.html", document, run=run, doc=document)


@dashboard_view
def load_test_json(request, pk):
    return _json(load_test_data(get_object_or_404(LoadTestRun, pk=pk)))


def locked_out(request, response, credentials):
    """What django-axes answers (429) to a locked-out attempt (AXES_LOCKOUT_CALLABLE): a page, or JSON for the API."""
    from django.conf import settings

    from routing.api.authentication import token_locked_out

    if request.path.startswith("/api/"):
        refusal = token_locked_out()
        return JsonResponse({"detail": refusal.detail}, status=429, headers={"Retry-After": str(refusal.wait)})
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    context = {"username": (credentials or {}).get("username", ""), "minutes": minutes,
               "failure_limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "registration/locked_out.html", context, status=429)


# --- API tokens -------------------------------------------------------------------


def _tokens_page(request, created=None, error=None, status=200):
    response = render(request, "dashboard/tokens.html", {
        "tokens": tokens.live_tokens(request.user), "created": created, "error": error,
        "default_days": settings.API_TOKEN_DAYS, "max_days": settings.API_TOKEN_MAX_DAYS,
    }, status=status)
    response["Cache-Control"] = "no-store"  # the new token is on this page exactly once
    return response


def _days_or_none(value):
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        raise tokens.TokenError("The lifetime is a whole number of days.") from None


@dashboard_view
def api_tokens(request):
    """List the user's own API tokens; POST creates one and shows it once."""
    if request.method != "POST":
        return _tokens_page(request)
    try:
        days = _days_or_none(request.POST.get("days"))
        token, plaintext = tokens.issue(request.user, request.POST.get("name"), days, actor=actor_name(request.user))
    except tokens.TokenError as error:
        return _tokens_page(request, error=str(error), status=400)
    return _tokens_page(request, created={"name": token.name, "token": plaintext, "expiry": token.expiry})


@require_POST
@dashboard_view
def revoke_api_token(request, token_key):
    token = get_object_or_404(ApiToken, user=request.user, token_key=token_key)
    tokens.revoke(token, actor=actor_name(request.user), user=request.user)
    return redirect("api-tokens")
