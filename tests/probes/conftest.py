"""Probe fixtures: a loopback simulator and a factory for deployments probed through it."""

import itertools

import pytest

from probes.models import ProbeTarget
from routing.models import ApiKey, Deployment, Provider
from routing.simulator import Personality, Simulator, SimulatorServer

GOOD_KEY = "sk-test-good-key-0001"
BAD_KEY = "sk-test-bad-key-9999"

# Fixed-latency models: median == p99 means no randomness.
MODELS = {
    "fixed-150": Personality(latency_median_ms=150, tokens_per_s=200),
    "instant": Personality(),
}


@pytest.fixture
def simulator():
    """A running simulator that accepts only GOOD_KEY; `.simulator.configure(...)` changes a model."""
    with SimulatorServer(Simulator(models=dict(MODELS), keys={GOOD_KEY}, seed=7)) as server:
        yield server


@pytest.fixture
def private_upstreams(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True


@pytest.fixture
def make_target(db, simulator, private_upstreams):
    """Return make(model, keys=(GOOD_KEY,), per_key=None, **target fields) → the deployment's ProbeTarget.

    per_key: a key plaintext to get a per-key target for, instead of the rotating one.
    """
    counter = itertools.count(1)

    def make(model, keys=(GOOD_KEY,), per_key=None, **fields):
        n = next(counter)
        provider = Provider.objects.create(name=f"sim-{n}", base_url=simulator.base_url)
        stored = {}
        for i, secret in enumerate(keys):
            key = ApiKey(provider=provider, label=f"key-{i}")
            key.set_secret(secret)
            key.save()
            stored[secret] = key
        deployment = Deployment.objects.create(name=f"dep-{n}", provider=provider, upstream_model=model)
        target = ProbeTarget.objects.get(deployment=deployment, api_key=None)
        if per_key is not None:
            target = ProbeTarget.objects.create(deployment=deployment, api_key=stored[per_key])
        for name, value in fields.items():
            setattr(target, name, value)
        target.save()
        return target

    return make
