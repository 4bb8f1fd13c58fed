"""Alert states that match what happened: a deployment that goes from degraded to down is told "down", never
"RESOLVED degraded"; each condition is an alert of its own, notified once per transition, grouped as configured."""

import pytest

from dashboard.alerts import engine
from dashboard.alerts.models import Alert, Channel, ChannelKind, NotificationPolicy

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db


@pytest.fixture
def default_rules(db):
    """The seeded pair: down after 60 s (critical), degraded after 300 s (warning)."""
    make_rule("deployment down", params={"states": ["down"]}, for_s=60)
    make_rule("deployment degraded", params={"states": ["degraded"]}, for_s=300, severity="warning")


def titles(sent):
    return [message.title for message, _ in sent]


def degraded_then_told(world, clock, sent):
    """The canary degrades, its alert fires after 300 s and is told after the group's 30 s wait."""
    set_health(world.canary, "degraded", "error rate 8 %", since=clock())
    engine.tick(clock())
    engine.tick(clock.advance(300))
    engine.tick(clock.advance(30))
    assert titles(sent) == ["[FIRING] deployment degraded"]


def test_a_deployment_going_from_degraded_to_down_is_told_down_and_never_resolved_degraded(
        world, default_rules, policy, sent, clock):
    degraded_then_told(world, clock, sent)
    set_health(world.canary, "down", "3 consecutive failures", since=clock.advance(20))
    engine.tick(clock())
    engine.tick(clock.advance(30))  # down is pending for its 60 s: degraded still fires, nothing is said
    assert titles(sent) == ["[FIRING] deployment degraded"]
    assert Alert.objects.get(rule__name="deployment degraded").state == "firing"
    engine.tick(clock.advance(30))  # down fires; its group waits 30 s
    engine.tick(clock.advance(30))
    engine.tick(clock.advance(600))
    assert titles(sent) == ["[FIRING] deployment degraded", "[FIRING] deployment down"]
    assert "canary is down: 3 consecutive failures" in sent[1][0].text
    degraded = Alert.objects.get(rule__name="deployment degraded")
    assert (degraded.state, degraded.suppressed) == ("resolved", "superseded")
    assert "canary is down" in degraded.suppressed_by

    set_health(world.canary, "up", "", since=clock.advance(60))
    engine.tick(clock())
    engine.tick(clock.advance(300))
    assert titles(sent)[2:] == ["[RESOLVED] deployment down"]
    assert all(m.status == "firing" or a.rule != "deployment degraded" for m, _ in sent for a in m.alerts)


def test_one_rule_watching_both_states_makes_one_alert_per_condition_and_tells_the_change(world, policy, sent, clock):
    make_rule("deployment unhealthy", params={"states": ["degraded", "down"]}, for_s=0)
    set_health(world.canary, "degraded", "error rate 8 %", since=clock())
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert [a.labels["health"] for a in sent[0][0].alerts] == ["degraded"]
    set_health(world.canary, "down", since=clock.advance(60))
    engine.tick(clock())
    engine.tick(clock.advance(300))  # the same group (alertname, provider): its group interval
    assert len(sent) == 2
    change = sent[1][0]
    assert change.status == "firing" and [(a.status, a.labels["health"]) for a in change.alerts] == [
        ("firing", "down")]
    assert sorted((a.labels["health"], a.state) for a in Alert.objects.all()) == [
        ("degraded", "resolved"), ("down", "firing")]


def test_a_deployment_that_recovers_before_down_fires_is_told_resolved_degraded(
        world, default_rules, policy, sent, clock):
    degraded_then_told(world, clock, sent)
    set_health(world.canary, "down", since=clock.advance(20))
    engine.tick(clock())
    set_health(world.canary, "up", "", since=clock.advance(30))  # back before down's 60 s: down never fired
    engine.tick(clock())
    engine.tick(clock.advance(300))
    assert titles(sent)[1:] == ["[RESOLVED] deployment degraded"]
    assert not Alert.objects.filter(rule__name="deployment down").exists()


def test_a_policy_that_never_takes_the_successor_hears_that_its_alert_ended_and_why(
        world, default_rules, channel, sent, clock):
    pager = Channel(name="pager", kind=ChannelKind.WEBHOOK)
    pager.set_target("https://pager.example.test/hook-token-456")
    pager.save()
    only_degraded = NotificationPolicy.objects.create(
        name="degraded to chat", order=1, matchers=[{"name": "alertname", "op": "=", "value": "deployment degraded"}],
        group_by=["alertname"], group_wait_s=0, group_interval_s=60)
    only_degraded.channels.add(channel)
    NotificationPolicy.objects.create(name="the rest to the pager", order=2, group_by=["alertname"],
                                      group_wait_s=0).channels.add(pager)
    set_health(world.canary, "degraded", "error rate 8 %", since=clock())
    engine.tick(clock())
    engine.tick(clock.advance(300))
    set_health(world.canary, "down", since=clock.advance(20))
    engine.tick(clock())
    engine.tick(clock.advance(60))
    engine.tick(clock.advance(60))
    told = [(m.title, ids) for m, ids in sent]
    assert told == [("[FIRING] deployment degraded", [channel.pk]),
                    ("[RESOLVED] deployment degraded", [channel.pk]),
                    ("[FIRING] deployment down", [pager.pk])] or told == [
                    ("[FIRING] deployment degraded", [channel.pk]),
                    ("[FIRING] deployment down", [pager.pk]),
                    ("[RESOLVED] deployment degraded", [channel.pk])]
    ended = next(m for m, _ in sent if m.status == "resolved")
    assert "canary is down" in ended.alerts[0].summary


def test_the_email_subject_of_a_change_names_the_new_state_once(world, default_rules, policy, sent, clock):
    degraded_then_told(world, clock, sent)
    set_health(world.canary, "down", since=clock.advance(20))
    engine.tick(clock())
    engine.tick(clock.advance(60))
    engine.tick(clock.advance(30))
    assert [m.subject() for m, _ in sent] == ["[FIRING] deployment degraded", "[FIRING] deployment down"]
