"""What the gateway records off the hot path: rollups, the sampled request log,
last use of gateway keys, and live traffic points."""

from decimal import Decimal

import pytest

from probes.models import Rollup
from routing.gateway import recorder
from routing.models import GatewayKey, RequestLog
from routing.outcomes import Outcome
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def points(monkeypatch):
    sent = []
    monkeypatch.setattr(recorder.live, "traffic_point", sent.append)
    return sent


def test_requests_are_rolled_up_per_deployment_with_tokens_cost_and_latency(sim, serve_gateway, points):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=0.0)
    for _ in range(3):
        assert post_chat(gateway, key, "r", max_tokens=10).status_code == 200
    assert post_chat(gateway, key, "r", stream=True, max_tokens=10).status_code == 200

    gateway.stop()  # writes what is left; no gateway thread touches the database after this
    rollup = Rollup.objects.get(source="traffic", deployment__name="d")
    assert rollup.ok == 4 and rollup.errors == {} and rollup.api_key.label == "key1" and rollup.route.name == "r"
    assert rollup.tokens_out == 40 and rollup.tokens_in > 0
    assert rollup.cost == (Decimal(rollup.tokens_in) * 1 + Decimal(rollup.tokens_out) * 2) / Decimal(1_000_000)
    assert rollup.latency["count"] == 4 and rollup.ttft["count"] == 1  # TTFT from the streamed one
    assert any(p.deployment == "d" and p.route == "r" and p.count == 4 for p in points)
    assert GatewayKey.objects.get(pk=key.pk).last_used_at is not None
    assert not RequestLog.objects.exists()  # successes sampled at 0 %


def test_every_failure_of_authenticated_traffic_is_logged_with_what_was_tried_but_no_bodies(sim, serve_gateway, points):
    sim.simulator.configure("broken", error_rate=1.0)
    provider = make_provider(sim)
    make_route("r", provider, {"b": ("broken", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=0.0)
    assert post_chat(gateway, key, "r").status_code == 502
    assert post_chat(gateway, None, "r").status_code == 401
    gateway.stop()

    failed = RequestLog.objects.get()  # the anonymous 401 is counted in /metrics, not logged
    assert failed.status == 502
    assert failed.outcome == Outcome.SERVER_ERROR and failed.attempts == 2 and failed.route_name == "r"
    assert [t["deployment"] for t in failed.tried] == ["b", "b"] and failed.tried[0]["status"] in (500, 503)
    assert failed.request_body is None and failed.response_body == ""
    assert gateway.gateway.recorder.metrics.unauthenticated == 1
    rollup = Rollup.objects.get(source="traffic", deployment__name="b")
    assert rollup.count == 2 and rollup.ok == 0 and rollup.errors == {"server_error": 2}


def test_bodies_are_logged_only_when_enabled(sim, serve_gateway, points):
    provider = make_provider(sim)
    make_route("r", provider, {"d": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(log_sample=1.0, log_bodies=True)
    assert post_chat(gateway, key, "r", max_tokens=2).status_code == 200
    gateway.stop()
    row = RequestLog.objects.get()
    assert row.outcome == Outcome.OK and row.request_body["messages"][0]["content"] == "hello there"
    assert "tok0 tok1" in row.response_body


class _Target:
    def __init__(self, deployment):
        self.deployment_id, self.deployment = deployment.pk, deployment.name
        self.fallback = 0


def _finished(deployment, route, **attempt):
    from routing.gateway.proxy import Try

    client = GatewayKey.objects.first() or client_key()
    record = recorder.Record("req_test", route_id=route.pk, route=route.name, client_key_id=client.pk)
    record.deployment_id, record.deployment = deployment.pk, deployment.name
    tried = Try(_Target(deployment), None, attempt.pop("outcome", Outcome.OK), 200, attempt.pop("ms", 12.0))
    for name, value in attempt.items():
        setattr(tried, name, value)
    record.tried.append(tried)
    return record


def test_an_absurd_usage_report_is_clamped_and_never_blocks_later_writes(sim):
    provider = make_provider(sim)
    route = make_route("r", provider, {"d": ("fast", 100)})
    deployment = route.targets.get().deployment
    rec = recorder.Recorder(flush_interval_s=60, log_sample=0.0)
    rec.record(_finished(deployment, route, tokens_in=-5, tokens_out=10**15, ms=float("nan"), tps=float("inf")))
    rec.flush()
    rec.record(_finished(deployment, route, tokens_in=3, tokens_out=4))
    rec.flush()
    row = Rollup.objects.get(source="traffic", deployment=deployment)
    assert row.count == 2 and row.tokens_in == 3 and row.tokens_out == recorder.rollups.MAX_TOKENS + 4
    assert row.latency["count"] == 1 and row.tps_count == 0  # the NaN latency and infinite rate were no figures


def test_a_delta_the_database_refuses_is_dropped_and_counted_and_the_rest_are_saved(sim):
    provider = make_provider(sim)
    route = make_route("r", provider, {"gone": ("fast", 50), "kept": ("fast", 50)})
    gone, kept = (route.targets.get(deployment__name=name).deployment for name in ("gone", "kept"))
    rec = recorder.Recorder(flush_interval_s=60, log_sample=0.0)
    rec.record(_finished(gone, route))
    rec.record(_finished(kept, route))
    route.targets.filter(deployment=gone).delete()
    gone.delete()  # its totals are not flushed yet
    rec.flush()
    rec.record(_finished(kept, route))
    rec.flush()
    assert Rollup.objects.get(source="traffic").count == 2
    assert rec.metrics.drops == {("rollup",): 1}
    assert b'weathervane_gateway_recorder_dropped_total{what="rollup"} 1.0' in _scrape(rec)


def test_a_nul_in_a_model_name_or_an_error_does_not_fail_the_request_log_batch(sim):
    provider = make_provider(sim)
    route = make_route("r", provider, {"d": ("fast", 100)})
    deployment = route.targets.get().deployment
    rec = recorder.Recorder(flush_interval_s=60, log_sample=0.0)
    for n in range(3):
        record = _finished(deployment, route, outcome=Outcome.SERVER_ERROR, error="bad\x00byte")
        record.outcome, record.status = Outcome.SERVER_ERROR, 502
        record.error, record.route = f"broken\x00 {n}", "r\x00"
        rec.record(record)
    rec.flush()
    rows = list(RequestLog.objects.all())
    assert len(rows) == 3 and all("\x00" not in r.error and r.route_name == "r" for r in rows)
    assert rows[0].tried[0]["error"] == "badbyte"


def test_failures_of_authenticated_traffic_are_kept_however_many_successes_are_sampled(sim):
    provider = make_provider(sim)
    route = make_route("r", provider, {"d": ("fast", 100)})
    deployment = route.targets.get().deployment
    rec = recorder.Recorder(flush_interval_s=60, log_sample=1.0)
    for _ in range(recorder.MAX_LOG_ROWS_PER_FLUSH):
        rec.record(_finished(deployment, route))
    failed = _finished(deployment, route, outcome=Outcome.TIMEOUT)
    failed.outcome, failed.status = Outcome.TIMEOUT, 504
    rec.record(failed)
    rec.flush()
    assert RequestLog.objects.filter(outcome=Outcome.TIMEOUT).count() == 1
    assert RequestLog.objects.filter(outcome=Outcome.OK).count() == recorder.MAX_SAMPLED_ROWS_PER_FLUSH


def _scrape(rec):
    from prometheus_client import generate_latest

    return generate_latest(rec.metrics.registry)


def test_a_long_running_flusher_keeps_no_growing_query_log_in_debug_mode(sim, settings, points):
    # DEBUG keeps every query a thread runs until a request starts; the flusher thread never sees one.
    from django.db import connection

    provider = make_provider(sim)
    route = make_route("r", provider, {"d": ("fast", 100)})
    deployment = route.targets.get().deployment
    settings.DEBUG = True
    rec = recorder.Recorder(flush_interval_s=60, log_sample=1.0)
    logged = []
    for _ in range(20):
        rec.record(_finished(deployment, route))
        rec.flush()
        logged.append(len(connection.queries_log))
    assert RequestLog.objects.count() == 20 and Rollup.objects.get(source="traffic").count == 20
    assert 0 < logged[-1] <= logged[0]  # one round's queries at most, not all twenty rounds'
