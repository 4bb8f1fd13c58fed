"""Mid-stream continuation (issue 9, item 4; on by default where verified: issue 20, item 4), judged from
the simulator's attempt log (what each upstream was sent: the prefill) and from what the client received.

The route has a faulty target that goes first (a sticky session id) and a second one. A stream
that breaks after content reached the client is continued on the second target, from an
assistant prefill of the text relayed so far, when the route's `continue_streams` allows that
target: with the default ("auto") only when a prefill probe verified it, with "on" unless a probe
saw it refuse, never with "off".
"""

import orjson
import pytest
from django.db.models import F, Sum
from django.utils import timezone

from probes.models import Rollup, Source
from routing.models import Deployment, PrefillSupport, RequestLog, Route
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape, wait_until
from tests.routing.gateway.test_faults import session_going_first_to, sse_payloads, streamed_text

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = 8
FULL_TEXT = "".join(f"tok{i} " for i in range(TOKENS))
FIRST_PART = "tok0 tok1 tok2 "  # the faulty target breaks after 3 tokens


def seed_prefill(name, support=PrefillSupport.VERIFIED):
    """Record a prefill verdict for deployment `name` as the prefill probe does (probes.prefill)."""
    Deployment.objects.filter(name=name).update(prefill_support=support, prefill_model=F("upstream_model"),
                                                prefill_checked_at=timezone.now())


@pytest.fixture
def route(sim, serve_gateway, metrics_token):
    """start(faulty personality fields, second model, continue_streams (None: the default), prefill verdict of
    the second target (None: unknown)) -> (gateway, key, session)."""

    def start(fault, second="fast", continue_streams=None, second_prefill=PrefillSupport.VERIFIED,
              **gateway_options):
        sim.simulator.configure("faulty-model", fault=fault, fault_after_tokens=3, fault_delay_s=3.0)
        provider = make_provider(sim, read_timeout=0.5)
        make_route("r", provider, {"faulty": ("faulty-model", 50), "second": (second, 50)})
        if continue_streams is not None:
            Route.objects.filter(name="r").update(continue_streams=continue_streams)
        if second_prefill is not None:
            seed_prefill("second", second_prefill)
        key = client_key()
        gateway = serve_gateway(**{"deadline_s": 8.0, "log_sample": 1.0, **gateway_options})
        return gateway, key, session_going_first_to("faulty", {"faulty": 50, "second": 50})

    return start


def stream(gateway, key, session, **fields):
    return post_chat(gateway, key, "r", stream=True, max_tokens=TOKENS, headers={"x-session-id": session}, **fields)


def chunks(response):
    return [orjson.loads(p) for p in sse_payloads(response.text) if p != "[DONE]"]


def assert_one_whole_answer(response):
    """The client got the full text once, one finish_reason, one [DONE] at the end, under one id and model."""
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads.count("[DONE]") == 1 and payloads[-1] == "[DONE]"
    assert streamed_text(payloads) == FULL_TEXT
    got = chunks(response)
    assert not any("error" in c for c in got)
    finishes = [ch["finish_reason"] for c in got for ch in c.get("choices") or () if ch.get("finish_reason")]
    assert finishes == ["stop"]
    assert len({c["id"] for c in got}) == 1 and len({c["model"] for c in got}) == 1
    roles = [ch for c in got for ch in c["choices"] if ch["delta"].get("role")]
    assert len(roles) == 1  # the continuation's own opening chunk is not relayed


def assert_ended_with_the_error_event(response, text=FIRST_PART):
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    errors = [c for c in chunks(response) if "error" in c]
    assert len(errors) == 1 and "error" in orjson.loads(payloads[-1])
    assert errors[0]["error"]["code"] == "stream_interrupted"
    assert streamed_text(payloads[:-1]) == text


def continuations(gateway, result):
    line = f'weathervane_gateway_stream_continuations_total{{result="{result}",route="r"}}'
    return next((float(row.split()[-1]) for row in scrape(gateway).text.splitlines() if row.startswith(line)), 0.0)


def test_a_cut_stream_is_continued_on_the_next_target_from_a_prefill(sim, route):
    gateway, key, session = route("cut_midway")  # the defaults: continued where a probe verified prefills
    response = stream(gateway, key, session)

    assert_one_whole_answer(response)
    assert response.headers["x-weathervane-deployment"] == "faulty"  # sent before the break
    assert ": x-weathervane-continued-by: second\n\n" in response.text  # names who finished the answer
    assert not any(c.get("usage") for c in chunks(response))  # usage was not asked for: not relayed
    (first,) = sim.simulator.attempts("faulty-model")
    (second,) = sim.simulator.attempts("fast")
    assert first.prefill is None and first.max_tokens == TOKENS
    assert second.prefill == FIRST_PART and second.max_tokens == TOKENS - 3 and second.stream
    assert wait_until(lambda: continuations(gateway, "answered") == 1.0)
    assert 'weathervane_gateway_upstream_attempts_total{deployment="faulty",outcome="truncated"} 1.0' in \
        scrape(gateway).text  # the broken first part still counts against its deployment


def test_the_request_log_marks_the_continuing_attempt(sim, route):
    gateway, key, session = route("cut_midway")
    stream(gateway, key, session)

    row = wait_until(lambda: RequestLog.objects.filter(route_name="r").first(), timeout=5)
    assert row.outcome == "ok" and row.deployment.name == "second"
    assert [(t["deployment"], t["outcome"], t.get("continuation", False)) for t in row.tried] == [
        ("faulty", "truncated", False), ("second", "ok", True)]
    assert row.tokens_out == TOKENS  # 3 from the broken stream, 5 from the continuation
    both = wait_until(lambda: traffic("faulty")["count"] and traffic("second")["count"], timeout=5)
    assert both and row.tokens_in == traffic("faulty")["tokens_in"] + traffic("second")["tokens_in"]
    # prices: 1 per million tokens in, 2 out
    assert float(row.cost) == pytest.approx((row.tokens_in * 1 + row.tokens_out * 2) / 1e6)


def traffic(name):
    rows = Rollup.objects.filter(source=Source.TRAFFIC, deployment__name=name)
    return rows.aggregate(tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), count=Sum("count"))


def test_the_rollups_hold_both_attempts_usage(sim, route):
    gateway, key, session = route("cut_midway")
    stream(gateway, key, session)

    broken = wait_until(lambda: traffic("faulty")["count"] and traffic("faulty"), timeout=5)
    continued = wait_until(lambda: traffic("second")["count"] and traffic("second"), timeout=5)
    assert broken["tokens_out"] == 3 and broken["tokens_in"] > 0
    assert continued["tokens_out"] == TOKENS - 3


def test_a_stalled_stream_is_continued_after_the_idle_timeout(sim, route):
    gateway, key, session = route("stall")
    response = stream(gateway, key, session)

    assert_one_whole_answer(response)
    assert sim.simulator.attempts("fast")[0].prefill == FIRST_PART


def test_an_error_event_mid_stream_is_continued(sim, route):
    gateway, key, session = route("error_midway")
    response = stream(gateway, key, session)

    assert_one_whole_answer(response)
    assert sim.simulator.attempts("fast")[0].prefill == FIRST_PART


def test_a_malformed_event_past_the_cap_is_continued(sim, route):
    gateway, key, session = route("malformed_chunk", max_malformed_events=0)  # the first malformed one breaks it
    response = stream(gateway, key, session)

    assert_one_whole_answer(response)
    assert sim.simulator.attempts("fast")[0].prefill == FIRST_PART


def test_the_usage_the_client_asked_for_comes_once_under_the_same_id_and_sums_both_attempts(sim, route):
    gateway, key, session = route("cut_midway")
    response = stream(gateway, key, session, stream_options={"include_usage": True})

    assert_one_whole_answer(response)
    (usage,) = [c["usage"] for c in chunks(response) if c.get("usage")]
    assert usage["completion_tokens"] == TOKENS  # 3 relayed from the first target, 5 generated by the second
    assert wait_until(lambda: traffic("faulty")["count"] and traffic("second")["count"], timeout=5)
    # both prompts were billed (the second one holds the prefill too)
    assert usage["prompt_tokens"] == traffic("faulty")["tokens_in"] + traffic("second")["tokens_in"]
    assert traffic("second")["tokens_in"] > traffic("faulty")["tokens_in"] > 0
    metrics = scrape(gateway).text  # each deployment's own tokens, not the sum on the one that finished
    assert 'weathervane_gateway_tokens_total{deployment="faulty",direction="out"} 3.0' in metrics
    assert f'weathervane_gateway_tokens_total{{deployment="second",direction="out"}} {TOKENS - 3}.0' in metrics
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    row = wait_until(lambda: RequestLog.objects.filter(route_name="r").first(), timeout=5)
    assert (row.tokens_in, row.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])


def test_with_continue_streams_off_a_broken_stream_ends_with_the_error_event(sim, route):
    gateway, key, session = route("cut_midway", continue_streams="off")  # even onto a verified target
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("fast") == []
    assert continuations(gateway, "answered") == 0.0


def test_by_default_a_target_no_probe_verified_is_never_sent_a_prefill(sim, route):
    gateway, key, session = route("cut_midway", second_prefill=None)
    seed_prefill("faulty")  # the route continues streams, but only onto the faulty target
    assert wait_until(lambda: gateway.gateway.store.current.routes["r"].continue_streams, timeout=5)
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("fast") == []


def test_a_target_a_probe_saw_refusing_is_never_sent_a_prefill_even_when_on(sim, route):
    gateway, key, session = route("cut_midway", second="no-prefill", continue_streams="on",
                                  second_prefill=PrefillSupport.REFUSED)
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("no-prefill") == []


def test_on_sends_a_target_not_checked_yet_the_prefill_and_a_refusal_ends_with_the_error_event(sim, route):
    gateway, key, session = route("cut_midway", second="no-prefill", continue_streams="on", second_prefill=None)
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    (refused,) = sim.simulator.attempts("no-prefill")
    assert refused.prefill == FIRST_PART and refused.outcome == "prefill_refused"
    assert wait_until(lambda: continuations(gateway, "refused") == 1.0)


def test_a_continuation_that_breaks_too_ends_with_one_error_event(sim, route):
    gateway, key, session = route("cut_midway", second="fault-cut-midway")
    sim.simulator.configure("fault-cut-midway", fault_after_tokens=2)
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response, text=FIRST_PART + "tok3 tok4 ")
    assert sim.simulator.attempts("fault-cut-midway")[0].prefill == FIRST_PART
    assert wait_until(lambda: continuations(gateway, "failed") == 1.0)


def test_no_continuation_beyond_the_attempt_cap(sim, route):
    gateway, key, session = route("cut_midway", max_attempts=1)
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("fast") == []
    assert wait_until(lambda: continuations(gateway, "unavailable") == 1.0)


def test_no_continuation_onto_a_target_whose_circuit_is_open(sim, route):
    gateway, key, session = route("cut_midway")
    second = gateway.gateway.store.current.routes["r"].targets[1]
    assert second.deployment == "second"
    for _ in range(gateway.gateway.config.breaker.consecutive):
        gateway.gateway.loop.call_soon_threadsafe(gateway.gateway.breakers.failure, second.deployment_id, "test")
    assert wait_until(lambda: not gateway.gateway.breakers.available(second.deployment_id))
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("fast") == []


def test_a_target_the_prefill_probe_verifies_continues_streams_with_the_defaults(sim, route, settings):
    from probes import prefill

    settings.ALLOW_PRIVATE_UPSTREAMS = True  # the probe calls the loopback simulator
    gateway, key, session = route("cut_midway", second_prefill=None)
    assert not gateway.gateway.store.current.routes["r"].continue_streams
    second = Deployment.objects.get(name="second")

    assert prefill.check(second.pk) == PrefillSupport.VERIFIED  # the probe's request, with its own prefill
    assert wait_until(lambda: gateway.gateway.store.current.routes["r"].continue_streams, timeout=5)
    assert_one_whole_answer(stream(gateway, key, session))
    assert [a.prefill for a in sim.simulator.attempts("fast")] == [prefill.PREFILL, FIRST_PART]


def test_a_fallback_the_prefill_probe_finds_refusing_is_never_sent_one_with_the_defaults(sim, route, settings):
    from probes import prefill

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    gateway, key, session = route("cut_midway", second="no-prefill", second_prefill=None)
    assert prefill.check(Deployment.objects.get(name="second").pk) == PrefillSupport.REFUSED
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert [a.prefill for a in sim.simulator.attempts("no-prefill")] == [prefill.PREFILL]  # the probe's only


def test_turning_continuation_off_reaches_the_gateway_without_a_restart(sim, route):
    gateway, key, session = route("cut_midway")
    opted = Route.objects.get(name="r")
    opted.continue_streams = "off"
    opted.save()  # as the API and the admin do: the change notice follows the commit

    assert wait_until(lambda: not gateway.gateway.store.current.routes["r"].continue_streams, timeout=5)
    assert_ended_with_the_error_event(stream(gateway, key, session))


def test_no_continuation_without_retry_budget(sim, route):
    gateway, key, session = route("cut_midway")
    budget = gateway.gateway.budget
    budget.min_per_s, budget.tokens = 0.0, 0.0  # each request deposits 0.2: never a whole extra attempt
    response = stream(gateway, key, session)

    assert_ended_with_the_error_event(response)
    assert sim.simulator.attempts("fast") == []
    assert wait_until(lambda: continuations(gateway, "unavailable") == 1.0)


def relay_after(route_opts_in, request, chunks_sent):
    """A StreamRelay of a call on a route that does or does not continue streams, after relaying `chunks_sent`."""
    from types import SimpleNamespace

    from routing import sse
    from routing.gateway.proxy import StreamRelay

    call = SimpleNamespace(wants_usage=False, route=SimpleNamespace(continue_streams=route_opts_in), request=request,
                           record=SimpleNamespace(notes=()), t0=0.0)
    relay = StreamRelay(call, None, None, 0.0)
    relay._select([sse.event(chunk) for chunk in chunks_sent])
    return relay


def chunk(**delta):
    return {"id": "c1", "model": "m", "created": 1, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def test_only_opted_in_plain_text_single_choice_answers_are_kept_for_a_prefill():
    text = [chunk(role="assistant", content=""), chunk(content="Hello "), chunk(content="world")]
    assert relay_after(True, {}, text).kept == ["Hello ", "world"]
    assert relay_after(True, {}, text).stamp == {"id": "c1", "model": "m", "created": 1}
    assert relay_after(False, {}, text).kept is None  # not opted in: nothing kept at all
    assert relay_after(True, {"n": 2}, text).kept is None
    tool_call = chunk(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "{"}}])
    assert relay_after(True, {}, [*text, tool_call]).kept is None
