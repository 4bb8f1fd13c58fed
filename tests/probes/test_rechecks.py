"""Key re-checks: an invalid key is re-probed with backoff and comes back by itself (audited both ways), a
suspect key is confirmed or cleared by a probe with it, and keys that staff disabled are never touched."""

import itertools
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from probes import rechecks
from probes.models import KeyRecheck, ProbeUsage
from probes.runner import run_probe
from routing.models import ApiKey, AuditEvent, Event, EventKind, KeyState
from routing.outcomes import Outcome
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.timeout(60)
slots = itertools.count(90_000, 1000)
RENEWED = "sk-test-renewed-key-4242"  # refused until the provider accepts it again


def key_of(target, secret_label="key-1"):
    return ApiKey.objects.get(provider=target.deployment.provider, label=secret_label)


def audit_states(key):
    rows = AuditEvent.objects.filter(object_type="apikey", object_id=str(key.pk), action="key_state").order_by("id")
    return [(row.before["state"], row.after["state"]) for row in rows]


def attempts_with(simulator, secret):
    return [a for a in simulator.simulator.attempts() if a.key == "…" + secret[-4:]]


def test_the_backoff_doubles_from_its_base_and_stops_at_its_cap():
    assert [rechecks.delay_s(n, base_s=60, max_s=3600) for n in range(8)] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert rechecks.delay_s(10_000, base_s=60, max_s=3600) == 3600


def test_the_backoff_comes_from_the_settings(settings):
    settings.KEY_RECHECK_BASE_S, settings.KEY_RECHECK_MAX_S = 5, 30
    assert [rechecks.delay_s(n) for n in range(4)] == [5, 10, 20, 30]


def test_an_invalid_key_is_re_probed_with_backoff_and_comes_back_by_itself_audited_both_ways(
        make_target, simulator, django_capture_on_commit_callbacks):
    target = make_target("instant", keys=(GOOD_KEY, RENEWED))
    while key_of(target).state != KeyState.INVALID:  # the rotating probe finds the refused key
        run_probe(target.pk, next(slots))
    key = key_of(target)
    t0 = key.state_since
    sent = len(attempts_with(simulator, RENEWED))

    assert rechecks.run_due(t0 + timedelta(seconds=59)) == 0  # not before the first minute
    assert rechecks.run_due(t0 + timedelta(seconds=61)) == 1
    assert len(attempts_with(simulator, RENEWED)) == sent + 1
    assert key_of(target).state == KeyState.INVALID  # still refused: it waits twice as long
    row = KeyRecheck.objects.get(api_key=key)
    assert row.failures == 1 and row.last_outcome == Outcome.BAD_KEY
    assert row.due_at == t0 + timedelta(seconds=61 + 120)
    assert rechecks.run_due(t0 + timedelta(seconds=61 + 119)) == 0

    simulator.simulator.keys = frozenset({GOOD_KEY, RENEWED})  # the provider accepts the key again
    with mock.patch("dashboard.live.timeline_event") as pushed, django_capture_on_commit_callbacks(execute=True):
        assert rechecks.run_due(t0 + timedelta(seconds=61 + 121)) == 1
    assert [call.args[0].kind for call in pushed.call_args_list] == [EventKind.KEY_ACTIVE]  # every open page
    key = key_of(target)
    assert key.state == KeyState.ACTIVE and key.usable()
    assert audit_states(key) == [("active", "invalid"), ("invalid", "active")]
    assert [a.actor for a in AuditEvent.objects.filter(object_id=str(key.pk))] == ["system:probes"] * 2
    assert Event.objects.filter(kind=EventKind.KEY_ACTIVE, api_key=key).count() == 1
    assert not KeyRecheck.objects.filter(api_key=key).exists()
    rows = str(list(AuditEvent.objects.values())) + str(list(Event.objects.values()))
    assert RENEWED not in rows and RENEWED[-8:] not in rows


def test_a_re_check_asks_for_one_token_and_counts_as_probe_usage(make_target, simulator):
    target = make_target("instant", keys=(RENEWED,))
    key = key_of(target, "key-0")
    ApiKey.change_state(key.pk, KeyState.INVALID, "refused", "test")
    simulator.simulator.keys = frozenset({RENEWED})
    later = timezone.now() + timedelta(hours=1)
    measurement = rechecks.recheck(key.pk, later) if rechecks.plan(later) == [key.pk] else None
    assert measurement is not None and measurement.outcome == Outcome.OK and measurement.tokens_out == 1
    usage = ProbeUsage.objects.get(provider=target.deployment.provider)
    assert usage.probes == 1 and usage.tokens == measurement.tokens_in + 1


def test_keys_that_staff_disabled_are_never_re_checked(make_target, simulator):
    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY, RENEWED))
    for label in ("key-1", "key-2"):
        ApiKey.change_state(key_of(target, label).pk, KeyState.INVALID, "refused", "test")
    rechecks.plan(timezone.now())
    assert KeyRecheck.objects.count() == 2
    ApiKey.objects.filter(label="key-1").update(enabled=False)
    ApiKey.objects.filter(label="key-2").update(state=KeyState.DISABLED, state_reason="disabled by alice")
    simulator.simulator.keys = frozenset({GOOD_KEY, BAD_KEY, RENEWED})

    assert rechecks.run_due(timezone.now() + timedelta(days=1)) == 0
    assert attempts_with(simulator, BAD_KEY) == [] and attempts_with(simulator, RENEWED) == []
    assert not KeyRecheck.objects.exists()
    assert key_of(target, "key-1").state == KeyState.INVALID
    assert (key_of(target, "key-2").state, key_of(target, "key-2").state_reason) == (KeyState.DISABLED,
                                                                                     "disabled by alice")


def test_a_key_disabled_while_its_re_check_waited_for_the_claim_is_left_alone(make_target, simulator):
    target = make_target("instant", keys=(GOOD_KEY, RENEWED))
    key = key_of(target)
    ApiKey.change_state(key.pk, KeyState.INVALID, "refused", "test")
    later = timezone.now() + timedelta(hours=1)
    assert rechecks.plan(later) == [key.pk]
    ApiKey.objects.filter(pk=key.pk).update(enabled=False)  # between the plan and the re-check
    assert rechecks.recheck(key.pk, later) is None
    assert attempts_with(simulator, RENEWED) == []


def test_only_one_process_re_checks_a_key_at_a_time(make_target, simulator):
    target = make_target("instant", keys=(GOOD_KEY, RENEWED))
    key = key_of(target)
    ApiKey.change_state(key.pk, KeyState.INVALID, "refused", "test")
    later = timezone.now() + timedelta(hours=1)
    rechecks.plan(later)
    assert rechecks._claim(key.pk, later)  # another worker holds the re-check
    assert rechecks.plan(later) == [] and rechecks.recheck(key.pk, later) is None
    assert attempts_with(simulator, RENEWED) == []
    expired = later + timedelta(seconds=rechecks.LEASE_S + 1)  # that worker died: its lease runs out
    assert rechecks.recheck(key.pk, expired) is not None
    assert len(attempts_with(simulator, RENEWED)) == 1


def test_a_key_the_gateway_suspects_is_re_checked_at_once_and_a_401_confirms_it_invalid(make_target, simulator):
    target = make_target("instant", keys=(GOOD_KEY, BAD_KEY))
    key = key_of(target)
    assert ApiKey.suspect(key.pk, "the upstream refused it once: HTTP 401", "system:gateway") is not None
    assert ApiKey.objects.get(pk=key.pk).usable()  # suspect keys stay in use
    assert Event.objects.filter(kind=EventKind.KEY_SUSPECT, api_key=key).count() == 1
    assert ApiKey.suspect(key.pk, "again", "system:gateway") is None  # suspected once, whatever the processes

    assert rechecks.run_due(timezone.now()) == 1
    key.refresh_from_db()
    assert key.state == KeyState.INVALID and key.suspect_since is None
    assert "a probe confirmed the 401" in key.state_reason and BAD_KEY not in key.state_reason
    assert audit_states(key) == [("active", "invalid")]
    assert Event.objects.filter(kind=EventKind.KEY_INVALID, api_key=key).count() == 1
    assert KeyRecheck.objects.get(api_key=key).failures == 0  # from now on re-checked as an invalid key


def test_a_suspect_key_that_a_probe_gets_through_with_is_trusted_again_without_an_audit_row(make_target, simulator):
    target = make_target("instant", keys=(GOOD_KEY,))
    key = key_of(target, "key-0")
    ApiKey.suspect(key.pk, "the upstream refused it once: HTTP 401", "system:gateway")
    assert rechecks.run_due(timezone.now()) == 1
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE and key.suspect_since is None
    assert audit_states(key) == []
    cleared = Event.objects.filter(kind=EventKind.KEY_ACTIVE, api_key=key).get()
    assert "no longer suspect" in cleared.message
    assert not KeyRecheck.objects.exists()


def test_the_next_regular_probe_with_a_suspect_key_confirms_or_clears_it(make_target, simulator):
    good = make_target("instant", keys=(GOOD_KEY,), per_key=GOOD_KEY)
    bad = make_target("instant", keys=(BAD_KEY,), per_key=BAD_KEY)
    for target in (good, bad):
        ApiKey.suspect(target.api_key_id, "the upstream refused it once: HTTP 401", "system:gateway")
        run_probe(target.pk, next(slots))
    trusted, confirmed = ApiKey.objects.get(pk=good.api_key_id), ApiKey.objects.get(pk=bad.api_key_id)
    assert (trusted.state, trusted.suspect_since) == (KeyState.ACTIVE, None)
    assert (confirmed.state, confirmed.suspect_since) == (KeyState.INVALID, None)


def test_a_re_check_that_says_nothing_about_the_key_leaves_it_and_waits_longer(make_target, simulator):
    simulator.simulator.configure("down", error_rate=1.0)
    target = make_target("down", keys=(GOOD_KEY,))
    key = key_of(target, "key-0")
    ApiKey.suspect(key.pk, "the upstream refused it once: HTTP 401", "system:gateway")
    now = timezone.now()
    assert rechecks.run_due(now) == 1
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE and key.suspect_since is not None  # a 5xx proves nothing either way
    row = KeyRecheck.objects.get(api_key=key)
    assert row.failures == 1 and row.last_outcome == Outcome.SERVER_ERROR
    assert row.due_at == now + timedelta(seconds=rechecks.delay_s(1))


def test_a_key_whose_provider_has_no_enabled_deployment_is_not_re_checked(make_target, simulator):
    target = make_target("instant", keys=(RENEWED,))
    key = key_of(target, "key-0")
    ApiKey.change_state(key.pk, KeyState.INVALID, "refused", "test")
    target.deployment.enabled = False
    target.deployment.save()
    later = timezone.now() + timedelta(hours=1)
    assert rechecks.run_due(later) == 0
    assert attempts_with(simulator, RENEWED) == []
    assert "no enabled deployment" in KeyRecheck.objects.get(api_key=key).last_error
