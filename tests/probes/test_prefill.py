"""The prefill check (probes.prefill): a deployment whose answer continues the given assistant text is verified,
one that refuses it (400) or answers afresh is refused, anything else is unknown and keeps an earlier verdict;
checks repeat daily, at once after the upstream model changed, and run once per claim."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from probes import prefill, tasks
from probes.models import ProbeUsage
from routing.models import Deployment, PrefillSupport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def deployment(make_target, simulator):
    """make(**personality fields) -> a Deployment of its own simulator model, not checked yet."""
    models = iter(range(1, 100))

    def make(**personality):
        model = f"prefill-model-{next(models)}"
        simulator.simulator.configure(model, **personality)
        return make_target(model).deployment

    return make


def reloaded(deployment):
    return Deployment.objects.get(pk=deployment.pk)


def test_a_deployment_that_continues_the_prefill_is_verified(deployment, simulator):
    dep = deployment()
    now = timezone.now()

    assert prefill.check(dep.pk, now) == PrefillSupport.VERIFIED
    (sent,) = simulator.simulator.attempts(dep.upstream_model)
    assert sent.prefill == prefill.PREFILL and sent.max_tokens == prefill.MAX_TOKENS and sent.stream
    dep = reloaded(dep)
    assert dep.prefill == PrefillSupport.VERIFIED and dep.prefill_model == dep.upstream_model
    assert dep.prefill_checked_at == now and "tok4" in dep.prefill_detail
    usage = ProbeUsage.objects.get(provider=dep.provider)
    assert usage.probes == 1 and 0 < usage.tokens < 60  # a cheap check, counted with the probes


def test_a_deployment_that_refuses_a_prefill_with_a_400_is_refused(deployment):
    dep = deployment(accepts_prefill=False)

    assert prefill.check(dep.pk) == PrefillSupport.REFUSED
    dep = reloaded(dep)
    assert dep.prefill == PrefillSupport.REFUSED and "400" in dep.prefill_detail


def test_an_answer_that_starts_afresh_is_refused(deployment):
    dep = deployment(answer="Sure! Here they are: tok0 tok1")  # ignores the prefill: a continuation would repeat

    assert prefill.check(dep.pk) == PrefillSupport.REFUSED
    assert "afresh" in reloaded(dep).prefill_detail


def test_an_inconclusive_check_keeps_the_earlier_verdict_and_comes_back_sooner(deployment, simulator, settings):
    dep = deployment()
    t0 = timezone.now()
    prefill.check(dep.pk, t0)
    simulator.simulator.configure(dep.upstream_model, error_rate=1.0)
    t1 = t0 + timedelta(seconds=settings.PREFILL_RECHECK_S + 1)

    assert prefill.check(dep.pk, t1) == PrefillSupport.UNKNOWN
    dep = reloaded(dep)
    assert dep.prefill == PrefillSupport.VERIFIED and "kept" in dep.prefill_detail and "server_error" in \
        dep.prefill_detail
    assert dep.prefill_due_at == t1 + timedelta(seconds=prefill.RETRY_S)


def test_a_deployment_never_verified_stays_unknown_while_checks_are_inconclusive(deployment):
    dep = deployment(error_rate=1.0)

    assert prefill.check(dep.pk) == PrefillSupport.UNKNOWN
    assert reloaded(dep).prefill == PrefillSupport.UNKNOWN and "inconclusive" in reloaded(dep).prefill_detail


def test_checks_repeat_after_the_recheck_period_and_run_once_per_claim(deployment, simulator, settings):
    dep = deployment()
    t0 = timezone.now()
    assert prefill.run_due(t0) == 1
    assert prefill.check(dep.pk, t0) is None  # done: not due again
    assert prefill.run_due(t0 + timedelta(seconds=settings.PREFILL_RECHECK_S - 60)) == 0
    assert prefill.run_due(t0 + timedelta(seconds=settings.PREFILL_RECHECK_S + 1)) == 1
    assert len(simulator.simulator.attempts(dep.upstream_model)) == 2


def test_a_new_upstream_model_voids_the_verdict_and_is_checked_at_once(deployment, simulator):
    dep = deployment()
    t0 = timezone.now()
    prefill.check(dep.pk, t0)
    simulator.simulator.configure("refusing-model", accepts_prefill=False)
    dep = reloaded(dep)
    dep.upstream_model = "refusing-model"
    dep.save()

    assert reloaded(dep).prefill == PrefillSupport.UNKNOWN  # the gateway stops trusting it before any check
    assert prefill.run_due(t0 + timedelta(minutes=1)) == 1
    dep = reloaded(dep)
    assert dep.prefill == PrefillSupport.REFUSED and dep.prefill_model == "refusing-model"
    assert simulator.simulator.attempts("refusing-model")[0].prefill == prefill.PREFILL


def test_a_disabled_deployment_is_never_checked(deployment, simulator):
    dep = deployment()
    Deployment.objects.filter(pk=dep.pk).update(enabled=False)

    assert prefill.run_due() == 0 and prefill.check(dep.pk) is None
    assert simulator.simulator.attempts(dep.upstream_model) == []


def test_beat_hands_out_each_due_check_and_the_task_runs_it_once(deployment, simulator):
    dep = deployment()
    with mock.patch.object(tasks.check_prefill_of, "delay") as enqueue:
        assert tasks.check_prefill() == 1
    enqueue.assert_called_once_with(dep.pk)
    tasks.check_prefill_of(dep.pk)
    tasks.check_prefill_of(dep.pk)  # delivered twice: sent once
    assert len(simulator.simulator.attempts(dep.upstream_model)) == 1
    assert reloaded(dep).prefill == PrefillSupport.VERIFIED


def test_a_verdict_that_changes_reaches_the_gateway_after_commit(deployment, django_capture_on_commit_callbacks):
    dep = deployment()
    with mock.patch("routing.gateway.snapshot.announce_change") as announce:
        with django_capture_on_commit_callbacks(execute=True):
            prefill.check(dep.pk)
    assert announce.called
