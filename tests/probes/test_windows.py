"""Context windows nobody typed, discovered by the probes: the provider's GET /models (vLLM's max_model_len,
OpenRouter's context_length), else the model catalogue; each shown with where it came from."""

from datetime import timedelta
from unittest import mock

import httpx
import pytest
import respx
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from probes import tasks, windows
from routing.models import ApiKey, Deployment, Provider, WindowSource
from routing.windows import catalogue_window
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.django_db


@pytest.fixture
def deploy(simulator, private_upstreams):
    """deploy(model, keys=(GOOD_KEY,), base_url=the simulator's) -> a Deployment with no window typed."""

    def make(model, keys=(GOOD_KEY,), base_url=None, name=None):
        provider = Provider.objects.create(name=f"p-{model}", base_url=base_url or simulator.base_url)
        for n, secret in enumerate(keys):
            key = ApiKey(provider=provider, label=f"k{n}")
            key.set_secret(secret)
            key.save()
        return Deployment.objects.create(name=name or f"d-{model}", provider=provider, upstream_model=model)

    return make


def test_the_window_a_provider_lists_as_vllm_does_fills_the_deployment(simulator, deploy):
    simulator.simulator.configure("served", context_window=8192)
    deployment = deploy("served")

    assert windows.run_due() == 1

    deployment.refresh_from_db()
    assert deployment.window() == (8192, WindowSource.PROVIDER)
    assert "reports 8192 tokens" in deployment.windows_note


def test_a_model_the_catalogue_knows_gets_its_window_when_the_provider_lists_none(simulator, deploy):
    deployment = deploy("gpt-4o-mini")  # the simulator lists it without a window
    expected = catalogue_window("gpt-4o-mini")

    windows.run_due()

    deployment.refresh_from_db()
    assert expected is not None and expected[0] > 0
    assert deployment.window() == (expected[0], WindowSource.CATALOGUE)
    assert deployment.catalogue_entry.startswith("genai-prices ") and "gpt-4o-mini" in deployment.catalogue_entry
    assert "reports no window for 'gpt-4o-mini'" in deployment.windows_note


def test_a_model_nobody_knows_stays_unknown_and_says_why(simulator, deploy):
    deployment = deploy("house-model-7")

    windows.run_due()

    deployment.refresh_from_db()
    assert deployment.window() == (None, WindowSource.UNKNOWN)
    assert "the catalogue does not know it" in deployment.windows_note


@respx.mock
def test_an_openrouter_style_context_length_fills_the_window(deploy):
    respx.get("https://openrouter.example/api/v1/models").mock(return_value=httpx.Response(200, json={"data": [
        {"id": "acme/big", "context_length": 131072, "top_provider": {"context_length": 65536}},
        {"id": "acme/small", "top_provider": {"context_length": 4096}},
    ]}))
    big = deploy("acme/big", base_url="https://openrouter.example/api/v1", name="big")
    Deployment.objects.create(name="small", provider=big.provider, upstream_model="acme/small")

    assert windows.run_due() == 2

    assert Deployment.objects.get(name="big").window() == (131072, WindowSource.PROVIDER)
    assert Deployment.objects.get(name="small").window() == (4096, WindowSource.PROVIDER)
    assert len(respx.calls) == 1  # one model list per provider


def test_a_provider_that_cannot_be_asked_keeps_what_it_said_before_and_the_note_says_why(simulator, deploy):
    deployment = deploy("served", keys=(BAD_KEY,))
    Deployment.objects.filter(pk=deployment.pk).update(provider_window=2048)

    windows.run_due()

    deployment.refresh_from_db()
    assert deployment.window() == (2048, WindowSource.PROVIDER)
    assert deployment.windows_note.startswith("GET /models failed: HTTP 401")
    assert BAD_KEY not in deployment.windows_note


def test_a_typed_window_always_wins(simulator, deploy):
    simulator.simulator.configure("served", context_window=8192)
    deployment = deploy("served")
    Deployment.objects.filter(pk=deployment.pk).update(context_window=1000, learned_window=500)

    windows.run_due()

    deployment.refresh_from_db()
    assert deployment.window() == (1000, WindowSource.TYPED)
    assert deployment.windows() == {"typed": 1000, "learned_from_error": 500, "provider_metadata": 8192,
                                    "catalogue": None}


def test_each_deployment_is_checked_once_per_period_and_again_after_its_model_changes(simulator, deploy):
    simulator.simulator.configure("served", context_window=8192)
    simulator.simulator.configure("bigger", context_window=32768)
    deployment = deploy("served")
    assert windows.run_due() == 1
    assert windows.run_due() == 0  # claimed and checked: not due again within WEATHERVANE_WINDOW_CHECK_EVERY

    deployment.refresh_from_db()
    deployment.upstream_model = "bigger"
    deployment.save()
    assert deployment.window() == (None, WindowSource.UNKNOWN)  # the old model's windows are forgotten
    assert windows.run_due() == 1

    deployment.refresh_from_db()
    assert deployment.window() == (32768, WindowSource.PROVIDER)


def test_beat_checks_windows_every_minute_and_its_task_runs_the_sweep(simulator, deploy):
    simulator.simulator.configure("served", context_window=8192)
    deployment = deploy("served")
    call_command("setup_probe_schedule", stdout=mock.Mock())

    assert PeriodicTask.objects.get(task="probes.tasks.check_windows").interval.every == 60
    assert tasks.check_windows() == 1
    assert Deployment.objects.get(pk=deployment.pk).window() == (8192, WindowSource.PROVIDER)


def test_a_check_is_due_again_after_the_period(simulator, deploy, settings):
    deploy("served")
    windows.run_due()
    later = timezone.now() + timedelta(seconds=settings.WINDOW_CHECK_EVERY_S + 1)

    assert windows.run_due(later) == 1
