"""Delivering notifications: a signed webhook, Apprise and email, retried with back-off in both modes, every attempt
logged, nothing secret in the log of deliveries."""

import json
import time
from datetime import UTC, datetime
from unittest import mock

import orjson
import pytest
from django.core import mail

from dashboard.alerts import delivery, senders, tasks
from dashboard.alerts.message import AlertItem, Message
from dashboard.alerts.models import Channel, Delivery
from tests.dashboard.alerts.receivers import Receiver

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

SECRET = "whsec-0123456789abcdef"


@pytest.fixture(autouse=True)
def loopback_allowed(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True  # the receivers are on 127.0.0.1
    settings.ALERT_DELIVERY_ATTEMPTS = 5
    settings.ALERT_DELIVERY_BACKOFF_S = 40


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def a_message(status="firing"):
    started = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    alert = AlertItem(rule="error rate", status=status, severity="critical",
                      summary="gpt-demo errors 9% > 5% for 10 min", labels={"route": "gpt-demo"}, started_at=started)
    return Message(group_key='route="gpt-demo"', status=status, severity="critical", title="gpt-demo error rate",
                   text="1 alert firing", labels={"route": "gpt-demo"}, alerts=(alert,), url="http://wv.example/alerts/")


def channel(kind, target, secret="", **fields):
    made = Channel(name=fields.pop("name", f"{kind}-channel"), kind=kind, **fields)
    made.set_target(target)
    made.set_secret(secret)
    made.save()
    return made


def hand_to(worker, ch, message=None):
    worker.submit(delivery.Job(ch.pk, (message or a_message()).as_json(), notification="n1"))


# --- The webhook ---------------------------------------------------------------------------------


def test_a_webhook_receives_the_message_as_json_signed_with_the_channels_secret():
    with Receiver(200) as hook:
        ch = channel("webhook", f"{hook.url}/hooks/wv", SECRET)
        worker = delivery.Worker(clock=FakeClock())
        hand_to(worker, ch)
        assert worker.run_due() == 1
    [got] = hook.received
    body = json.loads(got.body)
    assert got.path == "/hooks/wv" and got.headers["content-type"] == "application/json"
    assert body["group_key"] == 'route="gpt-demo"' and body["alerts"][0]["summary"].startswith("gpt-demo errors")
    assert body["sent_at"] is not None
    timestamp, header = got.headers["x-weathervane-timestamp"], got.headers["x-weathervane-signature"]
    assert header.startswith("sha256=")
    assert senders.verify_signature(SECRET, timestamp, got.body, header)
    assert not senders.verify_signature("another-secret-entirely", timestamp, got.body, header)
    assert not senders.verify_signature(SECRET, timestamp, got.body + b" ", header)  # the body is what is signed
    assert not senders.verify_signature(SECRET, int(timestamp) - 1, got.body, header)  # and so is the timestamp
    row = Delivery.objects.get()
    assert (row.outcome, row.http_status, row.attempt, row.status) == ("ok", 200, 1, "firing")
    assert row.next_attempt_at is None


def test_an_old_signature_is_refused_as_a_replay():
    body = b'{"a": 1}'
    header = senders.signature(SECRET, 1_000_000, body)
    assert senders.verify_signature(SECRET, 1_000_000, body, header, now=1_000_100)
    assert not senders.verify_signature(SECRET, 1_000_000, body, header, now=1_000_000 + 301)


def test_a_failing_webhook_is_retried_after_its_back_off_with_the_same_delivery_id():
    clock = FakeClock()
    with Receiver(500, 200) as hook:
        ch = channel("webhook", f"{hook.url}/h", SECRET)
        worker = delivery.Worker(clock=clock)
        hand_to(worker, ch)
        worker.run_due()
        first = Delivery.objects.get()
        assert (first.outcome, first.http_status, first.attempt) == ("failed", 500, 1)
        assert first.next_attempt_at is not None and "answered 500" in first.error
        clock.advance(39)
        assert worker.run_due() == 0 and len(hook.received) == 1  # not before its 40 s back-off
        clock.advance(1)
        assert worker.run_due() == 1
    second = Delivery.objects.order_by("pk").last()
    assert (second.outcome, second.http_status, second.attempt, second.next_attempt_at) == ("ok", 200, 2, None)
    ids = {r.headers["x-weathervane-delivery"] for r in hook.received}
    assert len(hook.received) == 2 and ids == {first.notification} and worker.pending() == []


def test_the_back_off_doubles_and_the_last_attempt_gives_up(settings):
    settings.ALERT_DELIVERY_ATTEMPTS = 4
    clock = FakeClock()
    with Receiver(503) as hook:
        worker = delivery.Worker(clock=clock)
        hand_to(worker, channel("webhook", hook.url, SECRET))
        waits = []
        worker.run_due()
        while worker.pending():
            due = worker._heap[0][0]
            waits.append(due - clock.now)
            clock.advance(due - clock.now)
            worker.run_due()
    rows = list(Delivery.objects.order_by("pk"))
    assert waits == [40, 80, 160] and [r.attempt for r in rows] == [1, 2, 3, 4] and len(hook.received) == 4
    assert all(r.outcome == "failed" for r in rows) and rows[-1].next_attempt_at is None


def test_a_refusal_that_would_come_again_is_not_retried():
    with Receiver(404) as hook:
        worker = delivery.Worker(clock=FakeClock())
        hand_to(worker, channel("webhook", hook.url, SECRET))
        worker.run_due()
    row = Delivery.objects.get()
    assert (row.outcome, row.http_status, row.next_attempt_at) == ("failed", 404, None) and worker.pending() == []


def test_a_webhook_is_never_redirected():
    with Receiver(302) as hook:
        row = delivery.attempt(channel("webhook", hook.url, SECRET).pk, a_message(), 1, "n1")
    assert row.outcome == "failed" and "redirect" in row.error and row.next_attempt_at is None


def test_a_webhook_on_a_private_address_is_refused_when_connecting_if_the_policy_forbids_it(settings):
    with Receiver(200) as hook:
        ch = channel("webhook", hook.url.replace("127.0.0.1", "localhost"), SECRET)  # saved while allowed
        settings.ALLOW_PRIVATE_UPSTREAMS = False
        row = delivery.attempt(ch.pk, a_message(), 1, "n1")
    assert hook.received == [] and row.outcome == "failed" and "private network" in row.error
    assert row.next_attempt_at is None


def test_an_unreachable_webhook_is_retried():
    with Receiver(200) as hook:
        url = hook.url
    row = delivery.attempt(channel("webhook", url, SECRET).pk, a_message(), 1, "n1")
    assert row.outcome == "failed" and row.http_status is None and row.next_attempt_at is not None
    assert "ConnectError" in row.error


def test_a_disabled_channel_gets_nothing_and_a_deleted_one_is_skipped():
    with Receiver(200) as hook:
        off = channel("webhook", hook.url, SECRET, enabled=False)
        assert delivery.attempt(off.pk, a_message(), 1, "n1") is None
        assert delivery.attempt(off.pk + 100, a_message(), 1, "n1") is None
    assert hook.received == [] and not Delivery.objects.exists()


# --- Email and Apprise ---------------------------------------------------------------------------------


def test_an_email_channel_sends_through_djangos_email_backend():
    ch = channel("email", "ops@example.com, oncall@example.org")
    row = delivery.attempt(ch.pk, a_message("resolved"), 1, "n1")
    [sent] = mail.outbox
    assert row.outcome == "ok" and sent.to == ["ops@example.com", "oncall@example.org"]
    assert sent.subject == "[RESOLVED] gpt-demo error rate"
    assert "gpt-demo errors 9% > 5% for 10 min" in sent.body and "http://wv.example/alerts/" in sent.body


def test_a_failing_smtp_server_is_retried_and_a_refused_recipient_is_not(settings):
    import smtplib

    ch = channel("email", "ops@example.com")
    with mock.patch("django.core.mail.EmailMessage.send", side_effect=ConnectionRefusedError(111, "refused")):
        down = delivery.attempt(ch.pk, a_message(), 1, "n1")
    refused = smtplib.SMTPRecipientsRefused({"ops@example.com": (550, b"no such user")})
    with mock.patch("django.core.mail.EmailMessage.send", side_effect=refused):
        bounced = delivery.attempt(ch.pk, a_message(), 1, "n2")
    assert down.outcome == "failed" and down.next_attempt_at is not None
    assert bounced.outcome == "failed" and bounced.next_attempt_at is None
    assert "ops@example.com" not in bounced.error  # the addresses are the channel's secret too


def test_an_apprise_channel_delivers_end_to_end_through_its_json_scheme_and_retries():
    clock = FakeClock()
    with Receiver(500, 200) as hook:
        ch = channel("apprise", hook.url.replace("http://", "json://") + "/apprise/sk-TOKEN-abcdef0123")
        worker = delivery.Worker(clock=clock)
        hand_to(worker, ch)
        worker.run_due()
        clock.advance(40)
        worker.run_due()
    first, second = Delivery.objects.order_by("pk")
    assert (first.outcome, first.http_status, second.outcome, second.attempt) == ("failed", 500, "ok", 2)
    assert "sk-TOKEN-abcdef0123" not in first.error and hook.received[0].path == "/apprise/sk-TOKEN-abcdef0123"
    body = json.loads(hook.received[-1].body)
    assert body["title"] == "[FIRING] gpt-demo error rate" and body["type"] == "failure"
    assert "gpt-demo errors 9% > 5%" in body["message"]


@pytest.fixture
def rebinding_name(monkeypatch):
    """alerts.example.com resolves to 127.0.0.1, as a name that answered public at save time might later."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real("127.0.0.1" if host == "alerts.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return "alerts.example.com"


def test_an_apprise_channel_never_connects_to_an_internal_address_when_the_policy_forbids_it(settings,
                                                                                          rebinding_name):
    with Receiver(200) as hook:
        port = hook.url.rsplit(":", 1)[1]
        ch = channel("apprise", f"json://{rebinding_name}:{port}/apprise/sk-TOKEN-abcdef0123")  # saved while allowed
        settings.ALLOW_PRIVATE_UPSTREAMS = False
        row = delivery.attempt(ch.pk, a_message(), 1, "n1")
    assert hook.received == [] and row.outcome == "failed" and "private network" in row.error
    assert row.next_attempt_at is None and "sk-TOKEN" not in row.error


def test_an_apprise_channel_dials_the_address_it_checked(rebinding_name):
    with Receiver(200) as hook:
        port = hook.url.rsplit(":", 1)[1]
        row = delivery.attempt(channel("apprise", f"json://{rebinding_name}:{port}/a").pk, a_message(), 1, "n1")
    assert row.outcome == "ok" and len(hook.received) == 1


def test_an_apprise_channel_is_never_redirected():
    with Receiver(307, 200, headers={"Location": "/elsewhere"}) as hook:
        row = delivery.attempt(channel("apprise", hook.url.replace("http://", "json://") + "/a").pk, a_message(), 1,
                               "n1")
    assert [r.path for r in hook.received] == ["/a"] and row.outcome == "failed"


def test_an_apprise_channel_saved_before_the_scheme_allow_list_is_refused_when_sending():
    with Receiver(200) as hook:
        ch = channel("apprise", hook.url.replace("http://", "form://") + "/a")  # stored as it was once accepted
        row = delivery.attempt(ch.pk, a_message(), 1, "n1")
    assert hook.received == [] and row.outcome == "failed" and "no longer accepted" in row.error


# --- Both modes, through enqueue --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_returns_at_once_and_the_embedded_worker_retries_until_delivered(settings):
    settings.ALERT_DELIVERY_IN_PROCESS = True
    settings.ALERT_DELIVERY_BACKOFF_S = 0  # the worker's own thread and clock: no waiting in a test
    try:
        with Receiver(500, 200) as hook:
            live = channel("webhook", hook.url, SECRET, name="live")
            off = channel("webhook", hook.url, SECRET, name="off", enabled=False)
            assert delivery.enqueue(a_message(), [live.pk, off.pk]) == 1
            deadline = time.monotonic() + 30
            while Delivery.objects.filter(outcome="ok").count() < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert [(r.attempt, r.outcome) for r in Delivery.objects.order_by("pk")] == [(1, "failed"), (2, "ok")]
        assert {r.channel_id for r in Delivery.objects.all()} == {live.pk}
    finally:
        delivery.stop_worker()


def test_enqueue_in_the_scaled_mode_queues_one_celery_task_per_enabled_channel_with_json_only(
        settings, django_capture_on_commit_callbacks):
    settings.ALERT_DELIVERY_IN_PROCESS = False
    live = channel("email", "ops@example.com", name="live")
    off = channel("email", "ops@example.com", name="off", enabled=False)
    with mock.patch.object(tasks.deliver_notification, "apply_async") as queued:
        with django_capture_on_commit_callbacks(execute=True):
            assert delivery.enqueue(a_message(), [live.pk, off.pk, 999]) == 1
            assert not queued.called  # not before the caller's transaction commits
    [(args,), _] = queued.call_args
    channel_id, message, notification = args
    assert channel_id == live.pk and json.loads(json.dumps(message)) == message and len(notification) == 32
    assert Message.from_json(message) == a_message()


def test_a_broker_that_is_down_is_logged_as_a_failed_delivery_and_does_not_raise(
        settings, django_capture_on_commit_callbacks):
    settings.ALERT_DELIVERY_IN_PROCESS = False
    ch = channel("email", "ops@example.com")
    with mock.patch.object(tasks.deliver_notification, "apply_async", side_effect=ConnectionRefusedError(111, "no")):
        with django_capture_on_commit_callbacks(execute=True):
            assert delivery.enqueue(a_message(), [ch.pk]) == 1
    row = Delivery.objects.get()
    assert row.outcome == "failed" and "task queue" in row.error


def test_the_celery_task_retries_a_failing_webhook_until_it_answers():
    with Receiver(500, 502, 200) as hook:
        ch = channel("webhook", hook.url, SECRET)
        tasks.deliver_notification.apply(args=(ch.pk, a_message().as_json(), "n-celery"))
    rows = list(Delivery.objects.order_by("pk"))
    assert [(r.attempt, r.outcome, r.http_status) for r in rows] == [(1, "failed", 500), (2, "failed", 502),
                                                                       (3, "ok", 200)]
    assert {r.headers["x-weathervane-delivery"] for r in hook.received} == {"n-celery"}


def test_the_celery_task_declares_the_same_schedule_as_the_embedded_worker():
    task = tasks.deliver_notification
    assert task.max_retries == 4 and task.retry_jitter is False and task.retry_backoff == 40
    assert [delivery.backoff_s(n) for n in (1, 2, 3, 4)] == [40, 80, 160, 320]  # Celery: 40 * 2 ** retries


def test_notifications_enqueued_in_a_transaction_that_rolls_back_are_never_sent(
        settings, django_capture_on_commit_callbacks):
    from django.db import transaction

    settings.ALERT_DELIVERY_IN_PROCESS = False
    ch = channel("email", "ops@example.com")
    with mock.patch.object(tasks.deliver_notification, "apply_async") as queued:
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(RuntimeError), transaction.atomic():
                delivery.enqueue(a_message(), [ch.pk])
                raise RuntimeError("the engine's tick failed")
            delivery.enqueue(a_message("resolved"), [ch.pk])  # the next tick commits
    [sent] = queued.call_args_list
    assert sent.args[0][1]["status"] == "resolved"


# --- Tests, pruning, redaction ------------------------------------------------------------------------------


def test_send_test_makes_one_attempt_now_and_never_retries():
    with Receiver(500) as hook:
        row = delivery.send_test(channel("webhook", hook.url, SECRET))
    assert row.test and row.outcome == "failed" and row.next_attempt_at is None and len(hook.received) == 1
    assert json.loads(hook.received[0].body)["title"] == "Test notification from Weathervane"


def test_old_delivery_attempts_are_pruned(settings):
    settings.ALERT_DELIVERY_RETENTION_DAYS = 30
    ch = channel("email", "ops@example.com")
    old = datetime(2026, 1, 1, tzinfo=UTC)
    Delivery.objects.create(channel=ch, notification="x", group_key="g", status="firing", attempt=1, outcome="ok",
                            at=old)
    delivery._pruned_at = 0.0
    delivery.attempt(ch.pk, a_message(), 1, "n1")
    assert list(Delivery.objects.values_list("notification", flat=True)) == ["n1"]


def test_an_echoed_secret_never_reaches_the_delivery_log_or_the_process_log(caplog):
    marker = "sk-MARKER-0123456789abcdef"
    reply = orjson.dumps({"error": f"bad token {marker} at /h/{marker}"})
    with Receiver(500, reply=reply) as hook:
        ch = channel("webhook", f"{hook.url}/h/{marker}?token={marker}", f"secret-{marker}")
        row = delivery.attempt(ch.pk, a_message(), 1, "n1")
    assert row.outcome == "failed" and "answered 500" in row.error
    assert marker not in row.error and marker not in caplog.text
