"""From validated settings (LoadTestSettingsSerializer.as_settings) to what the runner needs:
the Plan, the Target, and the estimated maximum spend shown before a run starts."""

from decimal import Decimal

from probes.loadtest import profiles, prompts, thresholds
from probes.loadtest.client import Target
from probes.loadtest.profiles import ProfileKind
from probes.loadtest.prompts import PromptSource
from probes.loadtest.runner import Plan
from probes.measure import chat_url
from routing.models import Deployment, Route

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
    """Return the deployments a run may reach: the route's active targets, or the one deployment."""
    if settings.get("deployment"):
        return list(Deployment.objects.filter(name=settings["deployment"]))
    route = Route.objects.get(name=settings["route"])
    return [t.deployment for t in route.active_targets().select_related("deployment")]


def max_spend(settings):
    """Return the most a run can cost: request cap × (prompt tokens estimate × input price +
    max_tokens × output price) of the most expensive target."""
    prompt_tokens = max(p.estimated_tokens() for p in prompts_for(settings))
    max_tokens = max([settings["max_tokens"], *(p.max_tokens or 0 for p in prompts_for(settings))])
    prices = [d.price_for(prompt_tokens, max_tokens) for d in priced_deployments(settings)]
    per_request = max(prices, default=Decimal(0))
    return (per_request * settings["requests"]).quantize(CENT_MILLIONTHS)


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
