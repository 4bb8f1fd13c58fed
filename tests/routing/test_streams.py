"""One stream reader (routing.streams): its rules, and the same outcome from the gateway, a probe and a
load-test request for every stream shape the simulator makes."""

import asyncio

import pytest

from probes import measure
from probes.loadtest.client import Sender, Target
from probes.loadtest.prompts import Prompt
from routing.models import RequestLog
from routing.outcomes import Outcome
from routing.simulator import Fault, Personality
from routing.streams import SKIPPED, StreamReader
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, wait_until

SECRET = "sk-test-key-0001"
TIMEOUT_S = 0.5  # every reader's idle/read timeout: a stall or a silence longer than it is a timeout everywhere
CHUNK = b'{"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": null}]}'
FINISH = b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}'
USAGE = b'{"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'


def read(*events, needs_usage=True, max_malformed=3):
    reader = StreamReader(needs_usage, max_malformed)
    for data in events:
        reader.take(data)
        if reader.problem is not None:
            break
    return reader


@pytest.mark.parametrize(("events", "outcome"), [
    ((CHUNK, FINISH, USAGE, b"[DONE]"), Outcome.OK),
    ((CHUNK, FINISH, USAGE), Outcome.OK),  # no [DONE]: the answer is whole
    ((CHUNK, b"[DONE]"), Outcome.OK),  # the upstream said it is over
    ((CHUNK, FINISH), Outcome.TRUNCATED),  # the usage asked for never came
    ((CHUNK,), Outcome.TRUNCATED),
    ((), Outcome.TRUNCATED),
    ((b"{not json", CHUNK, FINISH, USAGE), Outcome.MALFORMED),  # a malformed start
    ((CHUNK, b"{not json", b"[1]", FINISH, USAGE), Outcome.OK),  # skipped once started
    ((CHUNK, b"{", b"{", b"{", b"{", FINISH, USAGE), Outcome.MALFORMED),  # one past the cap
    ((CHUNK, b'{"error": {"message": "overloaded"}}', FINISH, USAGE), Outcome.SERVER_ERROR),
])
def test_a_stream_ending_cleanly_is_judged_by_what_it_carried(events, outcome):
    assert read(*events).end()[0] == outcome


def test_a_content_filter_ends_a_whole_answer_that_is_flagged():
    reader = read(CHUNK, b'{"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter"}]}', USAGE)
    assert reader.end() == (Outcome.OK, "") and reader.filtered


def test_a_broken_connection_is_a_truncation_unless_the_answer_was_whole():
    assert read(CHUNK).broke(Outcome.CONNECT_ERROR, "reset")[0] == Outcome.TRUNCATED
    assert read(CHUNK).broke(Outcome.TIMEOUT, "silent")[0] == Outcome.TIMEOUT
    assert read(CHUNK, FINISH, USAGE).broke(Outcome.TIMEOUT, "silent") == (Outcome.OK, "")


def test_a_skipped_event_is_marked_for_the_relay_and_counted():
    reader = StreamReader(max_malformed=3)
    reader.take(CHUNK)
    assert reader.take(b"{oops") is SKIPPED and reader.malformed == 1 and reader.problem is None
    assert reader.content_chunks == 1 and reader.first_content_at is not None


# --- the same outcome from the gateway, a probe and a load-test request -----------------------------------

HEALTHY = Personality(output_tokens=8)
SHAPES = {
    "healthy": (HEALTHY, Outcome.OK),
    "no_done": (Personality(output_tokens=8, fault=Fault.NO_DONE), Outcome.OK),
    "malformed_midway": (Personality(output_tokens=8, fault=Fault.MALFORMED_CHUNK), Outcome.OK),
    "malformed_start": (Personality(output_tokens=8, fault=Fault.MALFORMED_CHUNK, fault_after_tokens=0),
                        Outcome.MALFORMED),
    "cut_midway": (Personality(output_tokens=8, fault=Fault.CUT_MIDWAY), Outcome.TRUNCATED),
    "cut_before_content": (Personality(output_tokens=8, fault=Fault.CUT_MIDWAY, fault_after_tokens=0),
                           Outcome.TRUNCATED),
    "stall": (Personality(output_tokens=8, fault=Fault.STALL, fault_delay_s=2.0), Outcome.TIMEOUT),
    "slow_first_token": (Personality(output_tokens=8, fault=Fault.SLOW_FIRST_TOKEN, fault_delay_s=2.0),
                         Outcome.TIMEOUT),
    "silence": (Personality(fault=Fault.SILENCE), Outcome.TIMEOUT),
    "reset_before_headers": (Personality(fault=Fault.RESET_BEFORE_HEADERS), Outcome.CONNECT_ERROR),
    "error_first_event": (Personality(fault=Fault.ERROR_FIRST_EVENT), Outcome.SERVER_ERROR),
    "error_midway": (Personality(output_tokens=8, fault=Fault.ERROR_MIDWAY), Outcome.SERVER_ERROR),
    "server_error": (Personality(error_rate=1.0, error_status=500), Outcome.SERVER_ERROR),
    "rate_limited": (Personality(rate_429=1.0), Outcome.RATE_LIMITED),
    "context_length": (Personality(fault=Fault.CONTEXT_LENGTH), Outcome.CLIENT_ERROR),
    "content_filter": (Personality(content_filter=True), Outcome.CLIENT_ERROR),
}


def through_the_gateway(sim, serve_gateway, model):
    """The outcome the gateway booked for its one attempt on `model` (no retry, no other target)."""
    provider = make_provider(sim, name=f"p-{model}", keys=(SECRET,), read_timeout=TIMEOUT_S)
    make_route(model, provider, {model: (model, 100)})
    gateway = serve_gateway(retries_per_target=0, log_sample=1.0, deadline_s=5.0)
    post_chat(gateway, client_key(name=model), model, stream=True, max_tokens=8,
              stream_options={"include_usage": True})
    logged = wait_until(lambda: RequestLog.objects.filter(route_name=model).first(), timeout=5.0)
    return logged.tried[0]["outcome"]


def through_a_probe(sim, model):
    request = measure.ProbeRequest(url=measure.chat_url(sim.base_url), model=model, secret=SECRET,
                                   payload=measure.build_payload(model, "hello there", 8), timeout_s=TIMEOUT_S)
    return measure.probe(request).outcome


def through_a_load_test(sim, model):
    async def send():
        target = Target(url=measure.chat_url(sim.base_url), model=model, secret=SECRET)
        async with Sender(target, max_tokens=8, timeout_s=TIMEOUT_S) as sender:
            return await sender.send(Prompt(({"role": "user", "content": "hello there"},)))

    return asyncio.run(send()).outcome


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", SHAPES)
def test_the_gateway_a_probe_and_a_load_test_read_every_stream_shape_alike(sim, serve_gateway, settings, shape):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    personality, expected = SHAPES[shape]
    sim.simulator.set_model(shape, personality)
    seen = {
        "probe": through_a_probe(sim, shape),
        "load test": through_a_load_test(sim, shape),
        "gateway": through_the_gateway(sim, serve_gateway, shape),
    }
    assert seen == dict.fromkeys(seen, expected)
