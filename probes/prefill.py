"""The prefill check: does a deployment continue a final assistant message?

The gateway continues a stream that broke mid-way on another target by
sending the text relayed so far as an assistant prefill. A target that
ignores the prefill and answers afresh would repeat the start of the answer,
so by default (`Route.continue_streams` "auto") only targets this check
verified are sent one. The check is one tiny streamed request through the
probes' own seam (`measure.probe`): the user asks for "tok0 tok1 … tok11",
the assistant message already holds "tok0 tok1 tok2 tok3 ", and the answer
must go on with "tok4" (max 8 tokens, about 40 in all). It concludes:

- verified: the answer continued the given text;
- refused: a 400 or 422 (the provider refuses a final assistant message), or
  an answer that started afresh;
- unknown: anything that says nothing about prefills (a timeout, a 5xx, a
  429, a key problem, an empty answer). An earlier verdict about the same
  upstream model then stands, and the check is tried again sooner.

Each enabled deployment is checked once, then every WEATHERVANE_PREFILL_RECHECK
seconds (a day), after an inconclusive check within RETRY_S, and at once when
its upstream model changed (the old verdict is void for the new model). The
verdict lives on the Deployment (`prefill_support`, `prefill_model`,
`prefill_checked_at`, `prefill_detail`); the gateway reads it from its
snapshot. A check is claimed with a conditional UPDATE of `prefill_due_at`
(pushed past the check's timeout), so one process runs it whichever runs the
sweep (the embedded scheduler or Celery beat); one that died is re-claimed
once that lease passes. Its tokens count in the provider's probe usage.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from probes import measure
from probes.models import NoUsableKey, ProbeTarget
from probes.runner import count_usage, now_ms
from probes.signals import ensure_target
from routing.crypto import SecretUnreadable
from routing.models import Deployment, PrefillSupport
from routing.outcomes import Outcome
from routing.signals import config_changed

PROMPT = "Write the words tok0 to tok11 in order, separated by single spaces, and nothing else."
PREFILL = "tok0 tok1 tok2 tok3 "
CONTINUES_WITH = "tok4"
MAX_TOKENS = 8
REFUSING_STATUSES = (400, 422)
RETRY_S = 600  # after an inconclusive check
LEASE_MARGIN_S = 30
MAX_PER_SWEEP = 10


def due_deployments(now):
    """Return the enabled deployments whose check is due: never made, due again, or made for another model."""
    due = Q(prefill_due_at__isnull=True) | Q(prefill_due_at__lte=now) | ~Q(prefill_model=F("upstream_model"))
    return Deployment.objects.filter(due, enabled=True, provider__enabled=True)


def run_due(now=None):
    """Check every deployment that is due (the embedded scheduler's sweep); return how many were checked."""
    now = now or timezone.now()
    ids = list(due_deployments(now).order_by("pk").values_list("pk", flat=True)[:MAX_PER_SWEEP])
    return sum(check(deployment_id, now) is not None for deployment_id in ids)


def check(deployment_id, now=None):
    """Check one deployment when its check is due and this caller wins the claim.

    Returns the PrefillSupport concluded (before an earlier verdict is kept), or None when it was not due or was
    claimed elsewhere.
    """
    now = now or timezone.now()
    deployment = Deployment.objects.select_related("provider").filter(pk=deployment_id).first()
    if deployment is None or not _claim(deployment, now):
        return None
    measurement = _measure(ensure_target(deployment))
    support, detail = verdict(measurement)
    _conclude(deployment, support, detail, now)
    if measurement.total_ms is not None:  # something was sent: the provider billed it
        cost = deployment.price_for(measurement.tokens_in, measurement.tokens_out)
        count_usage(deployment.provider_id, now, measurement.tokens_in + measurement.tokens_out, cost)
    return support


def _claim(deployment, now):
    """Take the check of `deployment`: pushes its due time past the check's timeout (the lease). A new upstream
    model voids the old verdict at once."""
    lease = now + timedelta(seconds=_timeout_s(deployment) + LEASE_MARGIN_S)
    rows = Deployment.objects.filter(pk=deployment.pk, enabled=True)
    if rows.filter(~Q(prefill_model=F("upstream_model"))).update(
            prefill_model=F("upstream_model"), prefill_support=PrefillSupport.UNKNOWN, prefill_due_at=lease,
            prefill_detail="not checked with this upstream model yet"):
        deployment.refresh_from_db(fields=["upstream_model", "prefill_model", "prefill_support"])
        config_changed()  # a verdict about the old model no longer counts in the gateway
        return True
    due = Q(prefill_due_at__isnull=True) | Q(prefill_due_at__lte=now)
    return bool(rows.filter(due).update(prefill_due_at=lease))


def _timeout_s(deployment):
    target = ProbeTarget.objects.filter(deployment=deployment, api_key__isnull=True).first()
    return target.timeout_s if target is not None else 10.0


def _measure(target):
    """Return the Measurement of the prefill request sent with the target's key for now."""
    try:
        key = target.pick_key(now_ms())
        request = measure.request_for(target, key)
    except (NoUsableKey, SecretUnreadable) as exc:
        return measure.Measurement(outcome=Outcome.BAD_KEY, error=str(exc))
    request.payload["messages"] = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": PREFILL}]
    request.payload["max_tokens"] = MAX_TOKENS
    request.payload.pop("reasoning_effort", None)
    request.expected_pattern, request.expected_json = "", None  # the verdict judges the answer
    return measure.probe(request)


def verdict(m):
    """Return (PrefillSupport, why) for the Measurement of a prefill request."""
    if m.outcome == Outcome.OK:
        text = m.text.strip()
        if text.startswith(CONTINUES_WITH):
            return PrefillSupport.VERIFIED, f"continued the prefill: {text[:40]!r}"
        if not text:
            return PrefillSupport.UNKNOWN, "the answer was empty"
        return PrefillSupport.REFUSED, f"answered afresh instead of continuing the prefill: {text[:40]!r}"
    if m.outcome == Outcome.CLIENT_ERROR and m.status_code in REFUSING_STATUSES:
        return PrefillSupport.REFUSED, f"refused the prefill ({m.status_code}): {m.error}"
    return PrefillSupport.UNKNOWN, f"inconclusive ({m.outcome}): {m.error}"


def _conclude(deployment, support, detail, now):
    """Save the verdict, unless the upstream model changed meanwhile (then the check is due again at once).
    An inconclusive check keeps an earlier verdict about the same model."""
    before = deployment.prefill
    fields = {"prefill_checked_at": now, "prefill_detail": detail[:300]}
    if support == PrefillSupport.UNKNOWN:
        fields["prefill_due_at"] = now + timedelta(seconds=min(RETRY_S, settings.PREFILL_RECHECK_S))
        if before != PrefillSupport.UNKNOWN:
            fields["prefill_detail"] = f"{before.label}, kept: the last check was {detail}"[:300]
    else:
        fields["prefill_due_at"] = now + timedelta(seconds=settings.PREFILL_RECHECK_S)
        fields["prefill_support"] = support
    saved = Deployment.objects.filter(pk=deployment.pk, prefill_model=deployment.upstream_model,
                                      upstream_model=deployment.upstream_model).update(**fields)
    if saved and support != PrefillSupport.UNKNOWN and support != before:
        config_changed()
