"""From validated settings (LoadTestSettingsSerializer.as_settings) to what the runner needs:
the Plan, the Target, and the estimated maximum spend shown before a run starts."""

from decimal import Decimal

from django.conf import settings as django_settings

from probes.loadtest import profiles, prompts, thresholds
from probes.loadtest.client import Target
from probes.loadtest.profiles import ProfileKind
from probes.loadtest.prompts import PromptSource
from probes.loadtest.runner import Plan
from probes.measure import chat_url
from routing.models import Deployment, Route
from routing.rollouts.models import ACTIVE_STATES, Rollout

CENT_MILLIONTHS = Decimal("0.00000001")  # the precision LoadTestRun.estimated_max_cost stores


def prompts_for(settings):
    if settings["prompts"] == PromptSource.SYNTHETIC:
        return prompts.synthetic(settings["input_tokens"])
    if settings["prompts"] == PromptSource.JSONL:
        return prompts.from_jsonl(settings["prompts_jsonl"].splitlines())
    return prompts.builtin()


def plan_for(settings):
    kind = settings["profile"]
    phases = profiles.phases_for(kind, settings["concurrency"], settings.get("rate"), settings["seed"],
                                 settings["stages"])
    return Plan(
        phases=phases, prompts=prompts_for(settings), max_requests=settings["requests"],
        max_duration_s=settings["duration_s"], sweep_steps=settings["sweep_steps"] if kind == ProfileKind.SWEEP else 0,
        thresholds=[thresholds.parse(t) for t in settings["thresholds"]], abort_on_fail=settings["abort_on_fail"],
        slos=settings["slos"],
    )


def priced_deployments(settings):
    """Return the deployments a run may reach: the one deployment; or the route's active targets, its fallbacks
    and the canary of a rollout under way on it (which may get weight while the run lasts)."""
    if settings.get("deployment"):
        return list(Deployment.objects.filter(name=settings["deployment"]))
    route = Route.objects.get(name=settings["route"])
    reachable = [t.deployment for t in route.active_targets().select_related("deployment")]
    reachable += [f.deployment for f in route.fallbacks.select_related("deployment")]
    reachable += [r.canary for r in _rollouts(route)]
    return list({d.pk: d for d in reachable}.values())


def _rollouts(route):
    return list(Rollout.objects.filter(route=route, state__in=ACTIVE_STATES).select_related("canary"))


def calls_per_request(settings, deployments):
    """Return (upstream attempts, shadow copies) one request can cost at most: a direct run sends once; through
    the gateway, every retry and fallback the gateway may try (GATEWAY_RETRIES per option, at most
    GATEWAY_MAX_ATTEMPTS), plus one mirrored copy while a rollout with a shadow step is under way."""
    if settings.get("deployment"):
        return 1, 0
    tries = len(deployments) * (1 + django_settings.GATEWAY_RETRIES_PER_TARGET)
    attempts = max(1, min(django_settings.GATEWAY_MAX_ATTEMPTS, tries))
    route = Route.objects.get(name=settings["route"])
    shadowed = any(step.get("shadow") for r in _rollouts(route) for step in r.plan if isinstance(step, dict))
    return attempts, int(shadowed)


def max_spend(settings):
    """Return the most a run can cost: request cap × calls per request (retries, fallbacks, shadow copies) ×
    (prompt tokens estimate × input price + max_tokens × output price) of the dearest deployment it may reach."""
    prompt_tokens = max(p.estimated_tokens() for p in prompts_for(settings))
    max_tokens = max([settings["max_tokens"], *(p.max_tokens or 0 for p in prompts_for(settings))])
    deployments = priced_deployments(settings)
    dearest = max((d.price_for(prompt_tokens, max_tokens) for d in deployments), default=Decimal(0))
    attempts, shadows = calls_per_request(settings, deployments)
    return (dearest * (attempts + shadows) * settings["requests"]).quantize(CENT_MILLIONTHS)


class OverSpendCap(Exception):
    """A run's estimated maximum spend is over WEATHERVANE_LOADTEST_MAX_SPEND."""


def check_spend(settings):
    """Return the estimated maximum spend; raise OverSpendCap when it is over the server's cap."""
    spend = max_spend(settings)
    cap = Decimal(str(django_settings.LOADTEST_MAX_SPEND))
    if spend > cap:
        raise OverSpendCap(f"The estimated maximum spend ${spend:.4f} is over this server's cap ${cap:.2f} "
                           "(WEATHERVANE_LOADTEST_MAX_SPEND): lower requests or max_tokens.")
    return spend


def target_label(settings):
    return f"route:{settings['route']}" if settings.get("route") else f"deployment:{settings['deployment']}"


def prices(deployments):
    return {d.name: (float(d.input_price_per_mtok), float(d.output_price_per_mtok)) for d in deployments}


def route_target(settings, gateway_url, gateway_secret):
    """Return the Target for a route through the gateway at `gateway_url` (its /v1 base)."""
    return Target(url=gateway_url.rstrip("/") + "/chat/completions", model=settings["route"], secret=gateway_secret,
                  prices=prices(Deployment.objects.all()), label=target_label(settings))


class NoKey(Exception):
    """The deployment's provider has no usable key."""


def deployment_target(settings):
    """Return the Target for one deployment directly, with the first usable key of its provider.

    Raises NoKey when there is none.
    """
    deployment = Deployment.objects.select_related("provider").get(name=settings["deployment"])
    keys = [k for k in deployment.provider.keys.order_by("id") if k.usable()]
    if not keys:
        raise NoKey(f"{deployment.provider.name} has no usable API key")
    key = keys[0]
    return Target(url=chat_url(deployment.provider.base_url), model=deployment.upstream_model, secret=key.reveal(),
                  prices=prices([deployment]), deployment=deployment.name, label=target_label(settings),
                  guarded=True, max_in_flight=deployment.provider.max_concurrency or 0, rpm=key.rpm_limit,
                  tpm=key.tpm_limit)
