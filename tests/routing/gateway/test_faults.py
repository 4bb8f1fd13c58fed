"""Every simulator fault, one test each, judged from the simulator's attempt log
and from what the client received.

The route has a faulty target and a healthy one ("fast"); a sticky session id
makes the faulty one go first. Faults before the first byte are retried once
on the same target, then fail over; faults after the stream was committed
end it with an explicit SSE error event and no [DONE], never retried.
"""

import time
from types import SimpleNamespace

import httpx
import orjson
import pytest

from routing.gateway import selection
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = 8
FULL_TEXT = "".join(f"tok{i} " for i in range(TOKENS))
DEADLINE_S = 5.0


def session_going_first_to(deployment, weights):
    pool = [SimpleNamespace(deployment=name, weight=weight) for name, weight in weights.items()]
    return next(f"session-{i}" for i in range(10_000)
                if selection.sticky_choice(pool, f"session-{i}").deployment == deployment)


@pytest.fixture
def faulty_route(sim, serve_gateway):
    """start(fault model, **provider options) -> (gateway, key, session id that hits the faulty target first)."""

    def start(model, read_timeout=0.5, **gateway_options):
        provider = make_provider(sim, read_timeout=read_timeout)
        weights = {"faulty": 50, "healthy": 50}
        make_route("r", provider, {"faulty": (model, 50), "healthy": ("fast", 50)})
        key = client_key()
        return (serve_gateway(**{"deadline_s": DEADLINE_S, **gateway_options}), key,
                session_going_first_to("faulty", weights))

    return start


def sse_payloads(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def streamed_text(payloads):
    chunks = [orjson.loads(p) for p in payloads if p != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def timed_stream(gateway, key, session, **fields):
    started = time.monotonic()
    response = post_chat(gateway, key, "r", stream=True, max_tokens=TOKENS, headers={"x-session-id": session},
                         stream_options={"include_usage": True}, **fields)
    return response, time.monotonic() - started


def assert_failed_over(sim, response, model, elapsed, tries=2):
    """`tries` on the faulty model (a timeout fails over at once), then the healthy one answered everything, once."""
    assert response.status_code == 200, response.text
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert streamed_text(payloads) == FULL_TEXT
    assert response.headers["x-weathervane-deployment"] == "healthy"
    assert response.headers["x-weathervane-attempts"] == str(tries + 1)
    assert len(sim.simulator.attempts(model)) == tries
    assert len(sim.simulator.attempts("fast")) == 1
    assert elapsed < DEADLINE_S + 1


def assert_broken_stream(sim, response, model, elapsed, text=None):
    """One try only; the client got whole events, then an error event and no [DONE]."""
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    error = orjson.loads(payloads[-1])["error"]
    assert error["code"] == "stream_interrupted" and "incomplete" in error["message"]
    got = streamed_text(payloads[:-1])
    assert FULL_TEXT.startswith(got)  # in order, nothing repeated, nothing invented
    if text is not None:
        assert got == text
    assert len(sim.simulator.attempts(model)) == 1
    assert sim.simulator.attempts("fast") == []
    assert elapsed < DEADLINE_S + 1
    return got


def test_reset_before_headers_is_retried_then_fails_over(sim, faulty_route):
    gateway, key, session = faulty_route("fault-reset-before-headers")
    response, elapsed = timed_stream(gateway, key, session)
    assert_failed_over(sim, response, "fault-reset-before-headers", elapsed)


def test_silence_times_out_before_the_first_byte_then_fails_over(sim, faulty_route):
    gateway, key, session = faulty_route("fault-silence")
    response, elapsed = timed_stream(gateway, key, session)
    assert_failed_over(sim, response, "fault-silence", elapsed, tries=1)
    assert 0.5 <= elapsed < 1.0  # one read timeout of 0.5 s: a silent target is not tried twice


def test_a_slow_first_token_times_out_before_anything_is_relayed(sim, faulty_route):
    sim.simulator.configure("fault-slow-first-token", fault_delay_s=3.0)
    gateway, key, session = faulty_route("fault-slow-first-token")
    response, elapsed = timed_stream(gateway, key, session)
    assert_failed_over(sim, response, "fault-slow-first-token", elapsed, tries=1)
    assert elapsed < 1.5


def test_a_first_token_slower_than_its_timeout_fails_over_before_anything_is_relayed(sim, faulty_route):
    """The headers came at once, the content did not: the first-token timeout, not the read timeout, decides."""
    from routing.models import Deployment

    sim.simulator.configure("fault-slow-first-token", fault_delay_s=3.0)
    gateway, key, session = faulty_route("fault-slow-first-token", read_timeout=10.0)
    Deployment.objects.filter(name="faulty").update(first_token_timeout=0.8)
    gateway.gateway.store.load()
    response, elapsed = timed_stream(gateway, key, session)
    assert_failed_over(sim, response, "fault-slow-first-token", elapsed, tries=1)
    assert 0.8 <= elapsed < 2.5


def test_an_error_as_the_first_event_is_retried_then_fails_over(sim, faulty_route):
    gateway, key, session = faulty_route("fault-error-first-event")
    response, elapsed = timed_stream(gateway, key, session)
    assert_failed_over(sim, response, "fault-error-first-event", elapsed)


def test_a_stream_cut_midway_ends_with_an_error_event(sim, faulty_route):
    gateway, key, session = faulty_route("fault-cut-midway")
    response, elapsed = timed_stream(gateway, key, session)
    assert_broken_stream(sim, response, "fault-cut-midway", elapsed, text=FULL_TEXT[: len("tok0 tok1 tok2 tok3 ")])


def test_a_stalled_stream_ends_with_an_error_event_after_the_idle_timeout(sim, faulty_route):
    sim.simulator.configure("fault-stall", fault_delay_s=3.0)
    gateway, key, session = faulty_route("fault-stall")
    response, elapsed = timed_stream(gateway, key, session)
    assert_broken_stream(sim, response, "fault-stall", elapsed, text="tok0 tok1 tok2 tok3 ")
    assert elapsed < 2.0  # the 0.5 s idle timeout, not the 3 s stall


def assert_whole_stream(sim, gateway, response, model, note):
    """One try only; the client got the whole answer ending in [DONE], and the repair was counted."""
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    assert streamed_text(payloads) == FULL_TEXT
    assert len(sim.simulator.attempts(model)) == 1 and sim.simulator.attempts("fast") == []
    assert note in scrape(gateway).text


def test_a_malformed_chunk_midway_is_skipped_counted_and_the_answer_is_whole(sim, faulty_route, metrics_token):
    gateway, key, session = faulty_route("fault-malformed-chunk")
    response, _ = timed_stream(gateway, key, session)
    assert_whole_stream(sim, gateway, response, "fault-malformed-chunk", 'kind="malformed_event_skipped"')


def test_malformed_chunks_past_the_cap_end_the_stream_with_an_error_event(sim, faulty_route):
    gateway, key, session = faulty_route("fault-malformed-chunk", max_malformed_events=0)
    response, elapsed = timed_stream(gateway, key, session)
    assert_broken_stream(sim, response, "fault-malformed-chunk", elapsed, text="tok0 tok1 tok2 tok3 ")


def test_a_stream_that_finished_but_sent_no_done_is_completed_with_done(sim, faulty_route, metrics_token):
    gateway, key, session = faulty_route("fault-no-done")
    response, _ = timed_stream(gateway, key, session)
    assert_whole_stream(sim, gateway, response, "fault-no-done", 'kind="done_added"')


@pytest.mark.parametrize("model", ["fault-reset-before-headers", "fault-cut-midway", "fault-malformed-chunk",
                                   "fault-error-first-event", "fault-stall"])
def test_without_streaming_every_fault_is_retried_and_the_answer_is_whole(sim, faulty_route, model):
    sim.simulator.configure("fault-stall", fault_delay_s=3.0)
    gateway, key, session = faulty_route(model)
    started = time.monotonic()
    response = post_chat(gateway, key, "r", max_tokens=TOKENS, headers={"x-session-id": session})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == FULL_TEXT
    tries = 1 if model == "fault-stall" else 2  # a timeout fails over at once; other faults are retried once
    assert len(sim.simulator.attempts(model)) == tries and len(sim.simulator.attempts("fast")) == 1
    assert time.monotonic() - started < DEADLINE_S + 1


def test_a_stream_outliving_the_deadline_is_ended_within_a_second_of_it(sim, faulty_route):
    sim.simulator.configure("fault-stall", fault_delay_s=30.0)
    gateway, key, session = faulty_route("fault-stall", read_timeout=10.0, deadline_s=1.5)
    started = time.monotonic()
    response = post_chat(gateway, key, "r", stream=True, max_tokens=TOKENS, headers={"x-session-id": session})
    elapsed = time.monotonic() - started
    payloads = sse_payloads(response.text)
    assert orjson.loads(payloads[-1])["error"]["code"] == "deadline_exceeded" and "[DONE]" not in payloads
    assert 1.4 <= elapsed < 2.5


def test_a_silent_upstream_gets_504_at_the_deadline(sim, faulty_route):
    gateway, key, session = faulty_route("fault-silence", read_timeout=10.0, deadline_s=1.5)
    started = time.monotonic()
    response = post_chat(gateway, key, "r", headers={"x-session-id": session})
    assert response.status_code == 504 and response.json()["error"]["code"] == "deadline_exceeded"
    assert 1.4 <= time.monotonic() - started < 2.5


def test_a_client_leaving_mid_stream_closes_the_upstream_within_a_second(sim, faulty_route, metrics_token):
    sim.simulator.configure("slow-stream", tokens_per_s=20.0)  # 100 tokens: a 5 s stream
    gateway, key, session = faulty_route("slow-stream")
    body = {"model": "r", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 100}
    with httpx.Client(timeout=10) as client:
        with client.stream("POST", f"{gateway.base_url}/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {key.plaintext}", "x-session-id": session}) as response:
            lines = response.iter_lines()
            assert any(line.startswith("data: ") and "tok1 " in line for line in lines)
            assert sim.simulator.held  # the upstream is still streaming
            left_at = time.monotonic()
    assert wait_until(lambda: not sim.simulator.held, timeout=1.0), "the upstream request is still open"
    assert time.monotonic() - left_at < 1.0
    attempt = sim.simulator.attempts("slow-stream")[0]
    assert not attempt.completed
    metrics = lambda: scrape(gateway).text  # noqa: E731
    assert wait_until(lambda: 'outcome="client_closed"' in metrics(), timeout=2.0)
