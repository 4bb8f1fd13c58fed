"""Discovering context windows nobody typed: each provider's model list and the model catalogue.

A deployment is checked when it never was (new, or its model or provider changed: `Deployment.save`
forgets the windows of the old one) and then every WEATHERVANE_WINDOW_CHECK_EVERY seconds. A check asks
each provider once, `GET {base_url}/models` with one of its keys, for the window its list reports
(vLLM's `max_model_len`, OpenRouter's `context_length`, …: routing.windows), and the catalogue for each
model. A provider that cannot be asked (no usable key, a 404, a timeout) keeps the window it reported
before, and the note says why. What the gateway learns from a provider's own error is saved elsewhere
(`Deployment.learn_window`); which source wins is `Deployment.window`.

The embedded scheduler runs `run_due` at each of its refreshes, Celery beat `probes.tasks.check_windows`.
Each deployment is claimed with a conditional UPDATE of `windows_checked_at`, so two sweeps never ask for
the same one at once; a second run of a check writes the same values.
"""

from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from probes import measure
from routing import windows
from routing.crypto import SecretUnreadable
from routing.models import ApiKey, Deployment, KeyState, sendable_secret
from routing.outcomes import UpstreamError, storable
from routing.signals import config_changed

MAX_PER_SWEEP = 50
LIST_TIMEOUT_S = 15.0


def _stale(now):
    cutoff = now - timedelta(seconds=settings.WINDOW_CHECK_EVERY_S)
    return Q(windows_checked_at__isnull=True) | Q(windows_checked_at__lt=cutoff)


def claim_due(now=None):
    """Return the deployments due for a check (enabled, of an enabled provider), each claimed for this sweep."""
    now = now or timezone.now()
    due = Deployment.objects.filter(_stale(now), enabled=True, provider__enabled=True)
    claimed = [pk for pk in due.values_list("pk", flat=True)[:MAX_PER_SWEEP]
               if Deployment.objects.filter(_stale(now), pk=pk).update(windows_checked_at=now)]
    return list(Deployment.objects.filter(pk__in=claimed).select_related("provider").order_by("provider_id", "pk"))


def run_due(now=None):
    """Check every deployment that is due, one model list per provider; return how many were checked."""
    deployments = claim_due(now)
    changed = False
    for _, group in groupby(deployments, key=lambda d: d.provider_id):
        group = list(group)
        changed |= check_provider(group[0].provider, group)
    if changed:
        config_changed()
    return len(deployments)


def check_provider(provider, deployments):
    """Ask `provider` for its model list once and the catalogue for each deployment; save what they say.

    Returns True when some deployment's window changed.
    """
    listed, problem = model_list(provider)
    changed = False
    for deployment in deployments:
        changed |= _save(deployment, listed, problem)
    return changed


def model_list(provider):
    """Return ({model id: tokens}, None) from the provider's GET /models, or (None, why it could not be asked)."""
    secret = _usable_secret(provider)
    if secret is None:
        return None, "no usable key to ask the provider's GET /models with"
    url = provider.base_url.rstrip("/") + "/models"
    try:
        payload = measure.get_json(url, secret, min(provider.read_timeout, LIST_TIMEOUT_S), provider.connect_timeout)
    except UpstreamError as failure:
        return None, f"GET /models failed: {failure.message}"
    return windows.listed_windows(payload), None


def _usable_secret(provider):
    """Return the plaintext of one of the provider's keys that may be sent, or None."""
    keys = ApiKey.objects.filter(provider=provider, enabled=True).exclude(
        state__in=(KeyState.INVALID, KeyState.DISABLED)).order_by("id")
    for key in keys:
        try:
            secret = key.reveal()
        except SecretUnreadable:
            continue
        if sendable_secret(secret):
            return secret
    return None


def _save(deployment, listed, problem):
    """Save one deployment's provider and catalogue windows and the note; return True when a window changed."""
    model = deployment.upstream_model
    fields = {}
    if listed is not None:  # the provider answered: what it says now replaces what it said before
        fields["provider_window"] = listed.get(model)
    found = windows.catalogue_window(model, deployment.provider.base_url)
    fields["catalogue_window"], fields["catalogue_entry"] = found if found is not None else (None, "")
    changed = any(getattr(deployment, name) != value for name, value in fields.items())
    fields["windows_note"] = storable(_note(model, listed, problem, found), 300)
    if changed:
        fields["updated_at"] = timezone.now()  # the gateway's snapshot fingerprint sees the change
    Deployment.objects.filter(pk=deployment.pk).update(**fields)
    return changed


def _note(model, listed, problem, found):
    if problem is not None:
        said = problem
    elif model not in listed:
        said = f"the provider's GET /models reports no window for '{model}'"
    else:
        said = f"the provider's GET /models reports {listed[model]} tokens"
    catalogue = f"the catalogue ({found[1]}) knows {found[0]} tokens" if found else "the catalogue does not know it"
    return f"{said}; {catalogue}"
