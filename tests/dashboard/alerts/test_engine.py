"""The evaluation tick on a fake clock: for/pending, grouping (wait, interval, repeat), resolve, the lease."""

import pytest

from dashboard.alerts import engine
from dashboard.alerts.models import Alert, AlertGroup, EngineLease, NotificationPolicy
from probes.models import ProbeTarget
from routing.models import Deployment

from .conftest import make_rule, set_health

pytestmark = pytest.mark.django_db


def states():
    return sorted((a.labels["deployment"], a.state) for a in Alert.objects.all())


def test_a_rule_is_pending_for_its_for_duration_then_fires(world, policy, sent, clock):
    make_rule(for_s=60)
    set_health(world.canary, "down")
    engine.tick(clock())
    assert states() == [("canary", "pending")]
    engine.tick(clock.advance(59))
    assert states() == [("canary", "pending")]
    engine.tick(clock.advance(1))
    assert states() == [("canary", "firing")]


def test_a_pending_alert_that_clears_is_forgotten_without_a_word(world, policy, sent, clock):
    make_rule(for_s=60)
    set_health(world.canary, "down")
    engine.tick(clock())
    set_health(world.canary, "up")
    engine.tick(clock.advance(120))
    assert states() == []
    assert sent == []


def test_group_wait_then_one_notification_for_the_group(world, policy, channel, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    assert sent == []  # the group waits 30 s for company
    set_health(world.stable, "down")
    engine.tick(clock.advance(10))
    engine.tick(clock.advance(19))
    assert sent == []
    engine.tick(clock.advance(1))
    assert len(sent) == 1
    message, channel_ids = sent[0]
    assert channel_ids == [channel.pk]
    assert message.status == "firing" and message.severity == "critical"
    assert sorted(a.labels["deployment"] for a in message.alerts) == ["canary", "stable"]
    assert message.labels == {"alertname": "deployment down", "provider": "sim"}
    assert "canary is down" in message.text
    engine.tick(clock.advance(5))
    assert len(sent) == 1  # nothing new: nothing sent


def test_group_interval_spaces_updates_and_repeat_interval_reminds(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert len(sent) == 1
    set_health(world.stable, "down")  # news for the group, but within group_interval (300 s)
    engine.tick(clock.advance(60))
    assert len(sent) == 1
    engine.tick(clock.advance(240))
    assert len(sent) == 2 and len(sent[1][0].alerts) == 2
    engine.tick(clock.advance(3599))
    assert len(sent) == 2
    engine.tick(clock.advance(1))  # repeat_interval (3600 s) after the last notification, still firing
    assert len(sent) == 3 and sent[2][0].status == "firing"


def test_a_resolved_alert_is_notified_as_resolved_once(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    set_health(world.canary, "up")
    engine.tick(clock.advance(10))
    assert states() == [("canary", "resolved")]
    assert len(sent) == 1  # group_interval not yet over
    engine.tick(clock.advance(290))
    assert len(sent) == 2
    resolved = sent[1][0]
    assert resolved.status == "resolved" and resolved.alerts[0].ended_at == Alert.objects.get().resolved_at
    engine.tick(clock.advance(4000))
    assert len(sent) == 2  # the group is gone: no reminder of a resolved alert


def test_an_alert_that_never_fired_sends_no_resolve(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    set_health(world.canary, "up")
    engine.tick(clock.advance(40))
    assert sent == [] and states() == [("canary", "resolved")]


def test_severity_and_matchers_route_to_the_first_matching_policy_unless_continue(world, policy, channel, sent,
                                                                                   clock):
    from dashboard.alerts.models import Channel, NotificationPolicy

    pager = Channel.objects.create(name="pager", kind="webhook")
    critical = NotificationPolicy.objects.create(name="critical to pager", order=1, severities=["critical"],
                                                 matchers=[{"name": "deployment", "op": "=~", "value": "can.*"}],
                                                 group_wait_s=0)
    critical.channels.add(pager)
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    assert [ids for _, ids in sent] == [[pager.pk]]  # first match wins; "everything" never sees it
    critical.continue_matching = True
    critical.save()
    set_health(world.stable, "down")  # stable does not match "can.*": only the catch-all takes it
    engine.tick(clock.advance(30))
    engine.tick(clock.advance(30))  # the catch-all's new group has waited its 30 s
    assert [ids for _, ids in sent[1:]] == [[channel.pk]]
    assert sorted(a.labels["deployment"] for a in sent[1][0].alerts) == ["canary", "stable"]  # canary continued


def test_overlapping_ticks_never_send_twice(world, policy, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    clock.advance(30)
    number = engine.claim(clock())  # another worker's tick is under way
    assert engine.tick(clock()) is None
    assert sent == []
    engine._release(number, clock())
    assert engine.tick(clock())["sent"] == 1
    assert engine.tick(clock()) == {"firing": 1, "pending": 0, "sent": 0}
    assert len(sent) == 1


def test_a_lease_of_a_dead_tick_expires(world, policy, sent, clock):
    engine.claim(clock())  # claimed and never released
    assert engine.tick(clock.advance(engine.LEASE_S - 1)) is None
    assert engine.tick(clock.advance(2)) is not None
    assert EngineLease.objects.get().lease_until is None


def test_a_failing_tick_sends_nothing_and_changes_nothing(world, policy, sent, clock, monkeypatch):
    make_rule(for_s=0)
    set_health(world.canary, "down")
    engine.tick(clock())

    def boom(*args):
        raise RuntimeError("database went away")

    set_health(world.stable, "down")
    monkeypatch.setattr(engine, "_mark_suppressed", boom)
    with pytest.raises(RuntimeError):
        engine.tick(clock.advance(30))
    assert sent == []
    assert states() == [("canary", "firing")]  # stable's new alert was rolled back with the tick
    assert AlertGroup.objects.get().last_sent_at is None
    monkeypatch.undo()
    engine.tick(clock.advance(1))  # the lease was released: the next tick runs and sends both, once
    assert len(sent) == 1 and len(sent[0][0].alerts) == 2


def test_disabling_a_rule_resolves_its_alerts(world, policy, sent, clock):
    rule = make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    rule.enabled = False
    rule.save()
    engine.tick(clock.advance(5))
    assert states() == [("canary", "resolved")]


def test_a_tick_writes_in_a_few_queries_however_many_alerts_fire_at_once(world, channel, sent, clock,
                                                                         django_assert_max_num_queries):
    policy = NotificationPolicy.objects.create(name="per deployment", group_by=["alertname", "deployment"],
                                               group_wait_s=0, group_interval_s=60)
    policy.channels.add(channel)
    for i in range(13):
        Deployment.objects.create(name=f"extra-{i:02d}", provider=world.stable.provider, upstream_model="m")
    ProbeTarget.objects.update(health="down", health_reason="4 hard failures in a row")
    for i in range(20):
        make_rule(name=f"down {i:02d}", for_s=60)
    deployments = Deployment.objects.count()
    with django_assert_max_num_queries(40):  # 20 rules x 15 deployments: alerts created in one INSERT
        engine.tick(clock())
    assert Alert.objects.filter(state="pending").count() == 20 * deployments
    with django_assert_max_num_queries(40):  # all fire together: one UPDATE, the groups in one INSERT
        engine.tick(clock.advance(60))
    assert Alert.objects.filter(state="firing").count() == 20 * deployments
    assert AlertGroup.objects.count() == len(sent) == 20 * deployments
    ProbeTarget.objects.update(health="up", health_reason="")
    with django_assert_max_num_queries(40):  # all resolve together, notified and their groups deleted
        engine.tick(clock.advance(60))
    assert [m.status for m, _ in sent[20 * deployments:]] == ["resolved"] * 20 * deployments
    assert AlertGroup.objects.count() == 0


def test_for_counts_from_when_the_probes_marked_the_deployment_down_not_from_the_tick_that_saw_it(world, clock):
    from datetime import timedelta

    make_rule(for_s=60)
    set_health(world.canary, "down")
    ProbeTarget.objects.filter(deployment=world.canary).update(health_since=clock() - timedelta(seconds=50))
    engine.tick(clock())
    assert states() == [("canary", "pending")]
    assert engine.next_due() == clock() + timedelta(seconds=10)
    engine.tick(clock.advance(10))
    assert states() == [("canary", "firing")]
    assert engine.next_due() is None


def test_a_channel_attached_to_a_policy_while_alerts_fire_receives_them_at_the_next_tick(world, policy, channel,
                                                                                           sent, clock):
    from dashboard.alerts.models import Channel, ChannelKind

    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    assert [ids for _, ids in sent] == [[channel.pk]]
    pager = Channel(name="pager", kind=ChannelKind.WEBHOOK)
    pager.set_target("https://pager.example.test/hook-token-456")
    pager.save()
    policy.channels.add(pager)
    engine.tick(clock.advance(5))  # long before the group's interval or its repeat
    assert [ids for _, ids in sent] == [[channel.pk], [pager.pk]]
    assert sent[1][0].status == "firing" and "canary is down" in sent[1][0].text
    engine.tick(clock.advance(5))
    assert len(sent) == 2  # told once
    engine.tick(clock.advance(3600))  # the repeat goes to both
    assert sent[2][1] == [channel.pk, pager.pk]


def test_a_group_sent_before_channels_were_recorded_is_not_sent_again_to_them(world, policy, channel, sent, clock):
    make_rule()
    set_health(world.canary, "down")
    engine.tick(clock())
    engine.tick(clock.advance(30))
    AlertGroup.objects.update(channels_told=None)  # as the migration leaves the groups of an older version
    engine.tick(clock.advance(5))
    assert len(sent) == 1 and AlertGroup.objects.get().channels_told == [channel.pk]
