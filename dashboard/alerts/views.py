"""The alerts page: firing, pending and recently resolved alerts, silences (created and expired here by staff),
maintenance windows, rules, policies and channels. Built from the API's serializers, so page and API agree.

The channels page and its "send test notification" button (staff with `alerts.change_channel`)."""

import hashlib
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from dashboard.alerts import delivery
from dashboard.alerts.api.views import TEST_PERMISSION
from dashboard.alerts.models import Channel, DeliveryOutcome
from dashboard.roles import may, model_permissions
from dashboard.views import _json, _page, dashboard_view
from routing import deletion
from routing.api.base import AuditContext, save_audited
from routing.audit import actor_name, record, snapshot
from routing.models import AuditAction

from . import form, preview, tasks
from .api import serializers
from .matching import MAX_SILENCE, MatcherInvalid, SilenceInvalid, format_matchers, parse_matchers
from .models import (
    Alert,
    AlertRule,
    AlertState,
    InhibitRule,
    MaintenanceWindow,
    NotificationPolicy,
    Silence,
)
from .sources import SUBJECT_LABELS


@dashboard_view
def channels(request):
    return render(request, "alerts/channels.html")


@require_POST
@dashboard_view
def send_test(request, pk):
    """Send a test notification now, audit it, and go back to the page that asked, which shows the outcome."""
    if not may(request.user, [TEST_PERMISSION]):
        raise PermissionDenied("Only staff who may change alert channels can send test notifications.")
    channel = get_object_or_404(Channel, pk=pk)
    row = delivery.send_test_as(request.user, channel, reason="test notification from the dashboard")
    if row.outcome == DeliveryOutcome.OK:
        messages.success(request, f"Test notification delivered to '{channel.name}'.")
    else:
        messages.error(request, f"Test notification to '{channel.name}' failed: {row.error or 'no details'}")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return redirect("alert-channels")
    return redirect(target)


RESOLVED_SHOWN = 50
MAX_SILENCE_HOURS = MAX_SILENCE.total_seconds() / 3600
SILENCE_FIELD_LABELS = {"ends_at": "Hours", "match_all": "Matchers"}  # the form's words for the API's fields


def alerts_data(now=None):
    """Return everything the alerts page shows, as the REST API shows each part."""
    now = now or timezone.now()
    alerts = Alert.objects.select_related("rule")
    resolved = alerts.filter(state=AlertState.RESOLVED, resolved_at__gte=now - timedelta(days=1))[:RESOLVED_SHOWN]
    silences = Silence.objects.filter(ends_at__gte=now - timedelta(days=1))
    firing = serializers.AlertSerializer(alerts.filter(state=AlertState.FIRING), many=True).data
    pending = serializers.AlertSerializer(alerts.filter(state=AlertState.PENDING), many=True).data
    return {
        "firing": firing,
        "firing_count": sum(1 for a in firing if not a["suppressed"]),
        "pending": pending,
        "version": _version(firing, pending),
        "resolved": serializers.AlertSerializer(resolved, many=True).data,
        "silences": [_silence_row(s, now) for s in silences],
        "windows": serializers.MaintenanceWindowSerializer(MaintenanceWindow.objects.all(), many=True).data,
        "rules": serializers.AlertRuleSerializer(AlertRule.objects.all(), many=True).data,
        "policies": serializers.NotificationPolicySerializer(
            NotificationPolicy.objects.prefetch_related("channels"), many=True).data,
        "inhibit_rules": serializers.InhibitRuleSerializer(InhibitRule.objects.all(), many=True).data,
        "channels": [{"name": c.name, "kind": c.get_kind_display(), "hint": c.target_hint, "enabled": c.enabled}
                     for c in Channel.objects.all()],
    }


def _version(firing, pending):
    """Return a short fingerprint of what fires, what is quiet and what is pending. Ticks run off the request
    (a silence is applied by the next one), so a page compares it once its socket is open: a tick between its
    render and its first live message would otherwise go unseen."""
    parts = [f"{a['id']}:{a['suppressed']}" for a in firing] + [f"p{a['id']}" for a in pending]
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:16]


def _silence_row(silence, now):
    row = serializers.SilenceSerializer(silence).data
    row["matchers_text"] = format_matchers(silence.matchers)
    row["state"] = "active" if silence.active(now) else ("pending" if silence.starts_at > now else "expired")
    return row


def _silence_form(request):
    """The silence form's initial matchers: the labels of the alert named by ?silence=<id>, if any."""
    alert = Alert.objects.filter(pk=request.GET.get("silence") or 0).first() if (
        request.GET.get("silence", "").isdigit()) else None
    if alert is None:
        return {"matchers": "", "hours": 2, "reason": ""}
    names = ["alertname", *[n for n in SUBJECT_LABELS if n in alert.labels]]
    matchers = [{"name": n, "op": "=", "value": alert.labels[n]} for n in names]
    return {"matchers": format_matchers(matchers), "hours": 2, "reason": ""}


def _may_edit(user):
    """{"channels" | "rules" | "policies": {"add", "change", "delete": bool}}: the controls the page shows, by the
    API's permissions."""
    return {what: {action: may(user, model_permissions(f.model, action)) for action in ("add", "change", "delete")}
            for what, f in form.FORMS.items()}


@dashboard_view
def alerts(request):
    return _page(request, "alerts/alerts.html", alerts_data(), form=_silence_form(request),
                 can_silence=may(request.user, ["alerts.add_silence"]), may_edit=_may_edit(request.user))


@dashboard_view
def alerts_json(request):
    return _json(alerts_data())


def _require(request, permission):
    if not may(request.user, [permission]):
        raise PermissionDenied("Only staff with the right permission can change silences; viewers can look.")


@require_POST
@dashboard_view
def create_silence(request):
    """Create a silence from the page's form; answer the page again with the problem (400) when it is refused."""
    _require(request, "alerts.add_silence")
    form = {k: request.POST.get(k, "").strip() for k in ("matchers", "hours", "reason")}
    form["match_all"] = request.POST.get("match_all") == "on"
    problem, silence = _new_silence(form, request.user)
    if problem:
        response = _page(request, "alerts/alerts.html", alerts_data(), form=form, problem=problem, can_silence=True)
        response.status_code = 400
        return response
    tasks.tick_soon()  # quiet within a moment, from the scheduler's thread: never a tick inside a web request
    return redirect("alerts")


def _silence_input(form, now):
    """Return (problem in words, None) or (None, the silence's fields) from the page's form, checked as the API
    checks them (Silence.validate_silence)."""
    try:
        matchers = parse_matchers(form["matchers"])
    except MatcherInvalid as exc:
        return f"Matchers: {exc}", None
    try:
        hours = float(form["hours"])
    except ValueError:
        hours = 0
    if not 0 < hours <= MAX_SILENCE_HOURS:
        return f"Hours: a number above 0, at most {MAX_SILENCE_HOURS:g}.", None
    if not form["reason"] or len(form["reason"]) > 1000:
        return "Reason: say why (1 to 1,000 characters); it is kept with the silence.", None
    fields = {"matchers": matchers, "starts_at": now, "ends_at": now + timedelta(hours=hours)}
    try:
        Silence.validate_silence(**fields, match_all=form.get("match_all", False))
    except SilenceInvalid as exc:
        return f"{SILENCE_FIELD_LABELS[exc.field]}: {exc}", None
    return None, fields


def _new_silence(form, user):
    """Return (problem in words, None) or (None, the saved and audited Silence)."""
    problem, fields = _silence_input(form, timezone.now())
    if problem:
        return problem, None
    with transaction.atomic():
        silence = Silence.objects.create(**fields, created_by=actor_name(user), reason=form["reason"])
        record(action=AuditAction.CREATE, obj=silence, actor=actor_name(user), user=user, after=snapshot(silence),
               reason=form["reason"])
    return None, silence


@require_POST
@dashboard_view
def expire_silence(request, pk):
    _require(request, "alerts.change_silence")
    with transaction.atomic():
        silence = get_object_or_404(Silence.objects.select_for_update(), pk=pk)
        now = timezone.now()
        if silence.ends_at > now:
            before = snapshot(silence)
            silence.ends_at = max(now, silence.starts_at)
            silence.save(update_fields=["ends_at"])
            record(action=AuditAction.UPDATE, obj=silence, actor=actor_name(request.user), user=request.user,
                   before=before, after=snapshot(silence), reason="expired from the alerts page")
    tasks.tick_soon()
    return redirect("alerts")


# --- channels, rules and policies: the forms (the API's serializers validate, the API's permissions gate) --------

PAGE_REASON = "from the alerts page"
ANCHORS = {"channels": "alert-channels", "rules": "rules-title", "policies": "policies-title"}  # on /alerts/


def _require_may(user, model, action):
    if not may(user, model_permissions(model, action)):
        raise PermissionDenied(f"Only staff allowed to {action} {model._meta.verbose_name_plural} may do this "
                               "(as through the API); viewers can look.")


def _audit(user):
    return AuditContext(actor_name(user), user, PAGE_REASON)


@dashboard_view
def edit_config(request, what, pk=None):
    """A channel's, rule's or policy's form (`what`), new or of `pk`; a valid POST saves it as the API does (its
    serializer, its audit row) and goes back to the alerts page; an invalid one answers 400 with each error by
    its field, and changes nothing."""
    kind = form.FORMS[what]
    instance = get_object_or_404(kind.model, pk=pk) if pk else None
    _require_may(request.user, kind.model, "change" if instance else "add")
    if request.method != "POST":
        return _form_page(request, what, instance, kind.initial(instance))
    checked = form.check(kind, request.POST, instance, context={"audit": _audit(request.user)})
    if checked.errors:
        return _form_page(request, what, instance, checked.state, checked.errors, status=400)
    saved = save_audited(checked.serializer, _audit(request.user))
    tasks.tick_soon()
    messages.success(request, f"Saved {kind.noun} '{saved}'.")
    return redirect(f"{reverse('alerts')}#{ANCHORS[what]}")


def _form_page(request, what, instance, state, errors=None, status=200):
    kind = form.FORMS[what]
    response = render(request, kind.template, {
        "what": what, "anchor": ANCHORS[what], "instance": instance, "state": state, "errors": errors or {},
        "error_lines": form.error_lines(errors or {}), "choices": kind.choices(),
        "can_delete": instance is not None and may(request.user, model_permissions(kind.model, "delete"))})
    response.status_code = status
    return response


@require_POST
@dashboard_view
def delete_config(request, what, pk):
    """Delete a channel, rule or policy as the API's DELETE does (audited; 409 when something still needs it)."""
    kind = form.FORMS[what]
    _require_may(request.user, kind.model, "delete")
    instance = get_object_or_404(kind.model, pk=pk)
    try:
        deletion.delete(instance, actor=actor_name(request.user), user=request.user, reason=PAGE_REASON)
    except deletion.InUse as refused:
        return _form_page(request, what, instance, kind.initial(instance), {"form": [str(refused)]}, status=409)
    tasks.tick_soon()
    messages.success(request, f"Deleted {kind.noun} '{instance}'.")
    return redirect(f"{reverse('alerts')}#{ANCHORS[what]}")


@require_POST
@dashboard_view
def preview_config(request, what, pk=None):
    """What the rule or policy form as it stands would catch now (dashboard.alerts.preview), or 400 with
    {errors: ["Field: message"]}. Nothing is saved."""
    kind = form.FORMS[what]
    instance = get_object_or_404(kind.model, pk=pk) if pk else None
    _require_may(request.user, kind.model, "change" if instance else "add")
    checked = form.check(kind, request.POST, instance, context={"audit": _audit(request.user)})
    if checked.errors:
        return JsonResponse({"errors": form.error_lines(checked.errors)}, status=400)
    if what == "rules":
        return _json(preview.rule_catches(checked.serializer.validated_data, timezone.now()))
    return _json(preview.policy_catches(checked.serializer.validated_data, instance))
