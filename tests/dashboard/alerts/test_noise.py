"""Noise control on a fake clock: inhibition, silences (and their expiry), maintenance windows."""

from datetime import datetime, time, timedelta

import pytest

from dashboard.alerts import engine
from dashboard.alerts.models import Alert, InhibitRule, MaintenanceWindow, Silence, WindowKind

from .conftest import T0, make_rule, set_health

pytestmark = pytest.mark.django_db


def suppressed():
    return sorted((a.rule.name, a.labels.get("deployment", ""), a.suppressed) for a in Alert.objects.filter(
        state="firing"))


def sent_deployments(sent):
    return [sorted(a.labels.get("deployment", a.labels.get("provider")) for a in m.alerts) for m, _ in sent]


def test_a_provider_that_is_down_mutes_its_deployments_by_the_seeded_inhibit_rule(world, policy, sent, clock):
    assert InhibitRule.objects.filter(name__startswith="provider down").exists()  # seeded by the migration
    make_rule("provider down", kind="provider_down", params={})
    make_rule()
    set_health(world.canary, "down")
    set_health(world.stable, "down")
    engine.tick(clock())
    assert suppressed() == [("deployment down", "canary", "inhibited"), ("deployment down", "stable", "inhibited"),
                            ("provider down", "", "")]
    engine.tick(clock.advance(30))
    assert [m.labels["alertname"] for m, _ in sent] == ["provider down"]


def test_an_inhibit_rule_needs_the_equal_labels_to_match(world, policy, sent, clock):
    from routing.models import Deployment, Provider

    other = Provider.objects.create(name="other", base_url="http://127.0.0.1:9/v1")
    elsewhere = Deployment.objects.create(name="elsewhere", provider=other, upstream_model="m")
    make_rule("provider down", kind="provider_down", params={})
    make_rule()
    set_health(world.canary, "down")
    set_health(world.stable, "down")
    set_health(elsewhere, "down")
    set_health(world.stable, "up")  # sim has a deployment up: sim is not down, and "other" is
    engine.tick(clock())
    assert suppressed() == [("deployment down", "canary", ""), ("deployment down", "elsewhere", "inhibited"),
                            ("provider down", "", "")]


def test_a_silence_hides_a_firing_alert_and_its_expiry_notifies_it_again(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert len(sent) == 1
    Silence.objects.create(matchers=[{"name": "deployment", "op": "=", "value": "canary"}], starts_at=clock(),
                           ends_at=clock() + timedelta(hours=1), created_by="alice", reason="known, fixing")
    engine.tick(clock.advance(5))
    assert suppressed() == [("deployment down", "canary", "silenced")]
    engine.tick(clock.advance(3600 * 2))  # well past repeat_interval: no reminder while silenced
    assert len(sent) == 1
    assert suppressed() == [("deployment down", "canary", "")]  # the silence expired by itself at 1 h
    engine.tick(clock.advance(30))  # news again: a fresh group, sent after its group_wait
    assert len(sent) == 2 and sent[1][0].status == "firing"


def test_a_silence_that_starts_later_does_not_hide_yet(world, policy, sent, clock):
    make_rule()
    Silence.objects.create(matchers=[{"name": "alertname", "op": "=", "value": "deployment down"}],
                           starts_at=clock() + timedelta(minutes=10), ends_at=clock() + timedelta(hours=1),
                           created_by="alice", reason="planned")
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert len(sent) == 1


def test_a_one_off_maintenance_window_records_but_does_not_send(world, policy, sent, clock):
    make_rule()
    MaintenanceWindow.objects.create(name="upgrade", kind=WindowKind.ONE_OFF, starts_at=clock(),
                                     ends_at=clock() + timedelta(minutes=30),
                                     matchers=[{"name": "provider", "op": "=", "value": "sim"}])
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(60))
    assert suppressed() == [("deployment down", "canary", "maintenance")]  # recorded
    assert sent == []
    engine.tick(clock.advance(30 * 60))  # the window closed: the alert is news, its group waits as usual
    engine.tick(clock.advance(30))
    assert len(sent) == 1


@pytest.mark.parametrize(("local_now", "is_open"), [
    (datetime(2026, 12, 5, 23, 30), True),  # Saturday 23:30 in Berlin, in the Sat 22:00-02:00 window
    (datetime(2026, 12, 6, 1, 59), True),  # past midnight, still the Saturday window
    (datetime(2026, 12, 6, 2, 0), False),
    (datetime(2026, 12, 6, 23, 0), False),  # Sunday evening: not a window day
    (datetime(2026, 12, 5, 21, 59), False),
])
def test_a_weekly_window_is_open_on_its_days_in_its_timezone(db, local_now, is_open):
    from zoneinfo import ZoneInfo

    window = MaintenanceWindow(name="weekly", kind=WindowKind.WEEKLY, weekdays=[5], start_time=time(22, 0),
                               end_time=time(2, 0), timezone="Europe/Berlin")
    assert window.is_open(local_now.replace(tzinfo=ZoneInfo("Europe/Berlin"))) is is_open


def test_a_recurring_maintenance_window_holds_notifications_while_it_is_open(world, policy, sent, clock):
    make_rule()
    weekday = T0.weekday()
    MaintenanceWindow.objects.create(name="nightly", kind=WindowKind.WEEKLY, weekdays=[weekday],
                                     start_time=time(11, 0), end_time=time(13, 0), timezone="UTC")
    set_health(world.canary, "down")
    engine.tick(clock())  # 12:00 UTC: inside
    engine.tick(clock.advance(1800))
    assert sent == [] and suppressed() == [("deployment down", "canary", "maintenance")]
    engine.tick(clock.advance(3600))  # 13:30: the window closed
    engine.tick(clock.advance(30))
    assert len(sent) == 1


def test_a_catastrophic_silence_regex_on_a_25_character_label_is_judged_at_once():
    import time

    from dashboard.alerts.matching import matches

    labels = {"deployment": "a" * 24 + "!"}
    started = time.perf_counter()
    assert not matches({"name": "deployment", "op": "=~", "value": "(a+)+$"}, labels)
    assert matches({"name": "deployment", "op": "!~", "value": "(a+)+$"}, labels)
    assert time.perf_counter() - started < 0.1


def test_a_stored_regex_re2_cannot_run_mutes_nothing(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    # Saved before RE2 (or past the API): neither =~ nor !~ holds, so the silence hides no alert.
    Silence.objects.create(matchers=[{"name": "deployment", "op": "!~", "value": r"(?=x)y"}], starts_at=clock(),
                           ends_at=clock() + timedelta(hours=1), created_by="alice", reason="old pattern")
    engine.tick(clock.advance(30))
    assert suppressed() == [("deployment down", "canary", "")]
    assert len(sent) == 1
