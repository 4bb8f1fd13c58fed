"""One probe against the loopback simulator: timings, and every outcome classified."""

import socket
from datetime import timedelta

import pytest
from django.utils import timezone

from probes import measure
from probes.measure import ProbeRequest, answer_problem, matches_shape, model_swapped
from probes.models import ProbeResult, ProbeUsage
from probes.rollups import window_stats
from probes.runner import run_probe
from routing.outcomes import Outcome
from tests.probes.conftest import BAD_KEY, GOOD_KEY

pytestmark = pytest.mark.timeout(30)


def request(server, model, key=GOOD_KEY, timeout_s=3.0, max_tokens=8, **fields):
    payload = measure.build_payload(model, "Reply with the single word OK.", max_tokens)
    return ProbeRequest(url=measure.chat_url(server.base_url), model=model, payload=payload, secret=key,
                        timeout_s=timeout_s, connect_timeout_s=1.0, **fields)


def test_a_steady_model_measures_its_configured_latency(simulator, private_upstreams):
    m = measure.probe(request(simulator, "fixed-150"))
    assert m.outcome == Outcome.OK and m.completed and m.saw_done and m.finish_reason == "stop"
    assert 145 <= m.ttfb_ms <= 260
    assert m.ttfb_ms <= m.ttft_ms <= m.total_ms <= 400
    assert 120 <= m.tokens_per_s <= 260  # the personality streams 200 tokens/s
    assert m.tokens_out == 8 and m.tokens_in >= 1
    assert m.model_reported == "fixed-150" and not m.model_swapped


def test_the_probe_asks_for_a_tiny_stream(simulator, private_upstreams):
    measure.probe(request(simulator, "instant", max_tokens=3))
    attempt = simulator.simulator.attempts("instant")[-1]
    assert attempt.stream and attempt.key == "…" + GOOD_KEY[-4:]


@pytest.mark.parametrize(("model", "outcome"), [
    ("fault-cut-midway", Outcome.TRUNCATED),
    ("fault-error-first-event", Outcome.SERVER_ERROR),
    ("fault-reset-before-headers", Outcome.CONNECT_ERROR),
    ("no-such-model", Outcome.CLIENT_ERROR),
])
def test_broken_answers_are_classified_not_ok(simulator, private_upstreams, model, outcome):
    m = measure.probe(request(simulator, model))
    assert m.outcome == outcome, m.error
    assert not m.completed and m.error


@pytest.mark.parametrize("model", ["fault-no-done", "fault-malformed-chunk"])
def test_a_whole_answer_is_ok_without_its_done_or_past_a_stray_malformed_event(simulator, private_upstreams, model):
    """routing.streams' rules: whole once the finish_reason and usage came; a few malformed events midway skipped."""
    m = measure.probe(request(simulator, model))
    assert m.outcome == Outcome.OK, m.error
    assert m.completed and m.finish_reason == "stop" and m.tokens_out == 8


def test_a_stream_that_starts_with_a_malformed_event_is_malformed(simulator, private_upstreams):
    simulator.simulator.configure("fault-malformed-chunk", fault_after_tokens=0)
    m = measure.probe(request(simulator, "fault-malformed-chunk"))
    assert m.outcome == Outcome.MALFORMED and not m.completed


@pytest.mark.parametrize("model", ["fault-silence", "fault-slow-first-token", "fault-stall"])
def test_a_model_that_does_not_answer_in_time_is_a_timeout(simulator, private_upstreams, model):
    m = measure.probe(request(simulator, model, timeout_s=0.5))
    assert m.outcome == Outcome.TIMEOUT, m.error
    assert m.total_ms < 1500


def test_a_rejected_key_is_a_bad_key_and_its_secret_is_not_echoed(simulator, private_upstreams):
    m = measure.probe(request(simulator, "instant", key=BAD_KEY))
    assert m.outcome == Outcome.BAD_KEY and m.status_code == 401
    assert BAD_KEY not in m.error and BAD_KEY[-8:] not in m.error


def test_a_429_is_rate_limited_with_its_retry_after(simulator, private_upstreams):
    simulator.simulator.configure("limited", rate_429=1.0, retry_after_s=7)
    m = measure.probe(request(simulator, "limited"))
    assert m.outcome == Outcome.RATE_LIMITED and m.retry_after_s == 7


def test_a_5xx_is_a_server_error(simulator, private_upstreams):
    simulator.simulator.configure("broken", error_rate=1.0)
    assert measure.probe(request(simulator, "broken")).outcome == Outcome.SERVER_ERROR


def test_a_closed_port_is_a_connect_error(private_upstreams):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    req = ProbeRequest(url=f"http://127.0.0.1:{port}/v1/chat/completions", model="m", payload={}, timeout_s=1)
    assert measure.probe(req).outcome == Outcome.CONNECT_ERROR


def test_an_internal_address_is_refused_at_connect_time_unless_allowed(simulator, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    m = measure.probe(request(simulator, "instant"))
    assert m.outcome == Outcome.CONNECT_ERROR and "internal address" in m.error
    assert simulator.simulator.attempts() == []


def test_an_answer_that_misses_the_pattern_is_a_wrong_answer(simulator, private_upstreams):
    simulator.simulator.configure("says-no", answer="No.")
    simulator.simulator.configure("says-ok", answer="OK")
    assert measure.probe(request(simulator, "says-no", expected_pattern=r"^OK")).outcome == Outcome.WRONG_ANSWER
    assert measure.probe(request(simulator, "says-ok", expected_pattern=r"^OK")).outcome == Outcome.OK


def test_an_answer_of_the_wrong_json_shape_is_a_wrong_answer(simulator, private_upstreams):
    simulator.simulator.configure("json-good", answer='{"status": "ok", "n": 2}')
    simulator.simulator.configure("json-bad", answer='{"status": 1}')
    shape = {"status": "", "n": 0}
    assert measure.probe(request(simulator, "json-good", expected_json=shape)).outcome == Outcome.OK
    assert measure.probe(request(simulator, "json-bad", expected_json=shape)).outcome == Outcome.WRONG_ANSWER


def test_a_silently_swapped_model_is_flagged(simulator, private_upstreams):
    simulator.simulator.configure("swapper", report_model="cheap-model")
    m = measure.probe(request(simulator, "swapper"))
    assert m.outcome == Outcome.OK and m.model_swapped and m.model_reported == "cheap-model"


def test_model_swap_ignores_dated_variants():
    assert not model_swapped("gpt-4o", "gpt-4o-2024-08-06")
    assert model_swapped("gpt-4o", "gpt-4o-mini")  # not a dated variant: a different model
    assert model_swapped("gpt-4o", "llama-3")


def test_json_shapes_compare_types_and_required_keys():
    assert matches_shape({"a": [1, 2], "b": True, "c": "x"}, {"a": [0], "b": False})
    assert not matches_shape({"a": ["x"]}, {"a": [0]})
    assert not matches_shape({"b": 1}, {"b": False})
    assert answer_problem("not json", shape={}) != ""


class ChunkedResponse:
    def __init__(self, *chunks):
        self.chunks = chunks

    def iter_bytes(self):
        yield from self.chunks


def test_probes_read_events_split_anywhere_with_the_gateways_reader():
    response = ChunkedResponse(b": keep-alive\n\nda", b'ta: {"a":\ndata: 1}\r\n\r', b"\ndata: [DONE]\n\n")
    events = list(measure._events(response))
    assert [measure.sse.parse(measure.sse.event_data(e)) for e in events] == [None, {"a": 1}, measure.sse.DONE]


def test_run_probe_saves_one_result_counts_usage_and_rolls_up(make_target):
    target = make_target("fixed-150")
    result = run_probe(target.pk, slot=1_000)
    assert result.outcome == Outcome.OK and result.api_key.label == "key-0"
    assert run_probe(target.pk, slot=1_000) is None  # the slot is done: nothing runs twice
    assert ProbeResult.objects.filter(target=target).count() == 1
    assert ProbeUsage.objects.get(provider=target.deployment.provider).tokens == result.tokens_in + result.tokens_out
    stats = window_stats(target.deployment_id, "probe", timezone.now() - timedelta(minutes=5))
    assert stats["count"] == 1 and 140 <= stats["p50_ms"] <= 400


def test_an_event_of_the_wrong_shape_is_not_a_crash():
    result = measure.Measurement()
    stream = measure._Stream(result, 0.0)
    assert stream.take(b'data: {"choices": ["not an object"]}\n\n') is True  # carries nothing
    assert stream.take(b"data: [1, 2]\n\n") is False  # not an object, before the answer started
    stream.finish(*stream.reader.end())
    assert result.outcome == Outcome.MALFORMED and not result.completed
