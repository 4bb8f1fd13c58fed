"""The upstream simulator, seen the way a client sees it: real HTTP over loopback."""

import json
import statistics
import threading
import time

import httpx
import openai
import pytest
from django.core.management.base import CommandError

from routing.management.commands.simulate import parse_keys, read_config
from routing.simulator import Fault, Personality, SimulatorServer, personality_from

KEY = "sk-sim-test-a1b2"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "Say hello to the simulator, please."}]  # 35 chars → 9 tokens


@pytest.fixture(scope="module")
def server():
    with SimulatorServer(seed=7) as running:
        yield running


@pytest.fixture
def sim(server):
    """The shared simulator, with a clean log, no custom models and any key accepted."""
    simulator = server.simulator
    simulator.reset()
    simulator.models.clear()
    simulator.keys = None
    return simulator


@pytest.fixture
def http(server, sim):
    with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=5) as client:
        yield client


@pytest.fixture
def sdk(server, sim):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=5)


def chat(http, model, **fields):
    return http.post("/chat/completions", json={"model": model, "messages": HELLO, **fields})


def stream_events(http, model, **fields):
    """Return (status, [(seconds since request, data string)]) for a streamed completion."""
    started = time.monotonic()
    body = {"model": model, "messages": HELLO, "stream": True, **fields}
    with http.stream("POST", "/chat/completions", json=body) as response:
        events = [
            (time.monotonic() - started, line[len("data: "):])
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]
    return response.status_code, events


def read_until_broken(http, model):
    """Stream model until the connection breaks; return (data strings received, the error raised)."""
    received = []
    body = {"model": model, "messages": HELLO, "stream": True}
    with pytest.raises(httpx.TransportError) as broken:
        with http.stream("POST", "/chat/completions", json=body) as response:
            received.extend(line[len("data: "):] for line in response.iter_lines() if line.startswith("data: "))
    return received, broken.value


def contents(datas):
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in map(json.loads, datas)
        for choice in chunk["choices"]
    )


def finish_reasons(datas):
    choices = [choice for chunk in map(json.loads, datas) for choice in chunk["choices"]]
    return [choice["finish_reason"] for choice in choices if choice["finish_reason"]]


def only_attempt(sim):
    (attempt,) = sim.attempts()
    return attempt


# Completions


def test_it_answers_a_chat_completion_with_numbered_tokens_and_usage(http):
    response = chat(http, "fast")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fast"
    assert body["choices"][0]["message"]["content"] == "".join(f"tok{i} " for i in range(16))
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 16, "total_tokens": 25}


def test_max_tokens_sets_the_length_up_to_the_personality_cap(http, sim):
    sim.configure("capped", max_output_tokens=5)

    assert chat(http, "fast", max_tokens=3).json()["usage"]["completion_tokens"] == 3
    assert chat(http, "capped", max_tokens=50).json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "


def test_it_streams_each_token_once_then_finish_then_usage_then_done(http):
    status, events = stream_events(http, "fast", max_tokens=5, stream_options={"include_usage": True})
    datas = [data for _, data in events]

    assert status == 200
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(data) for data in datas[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert contents(datas[:-1]) == "tok0 tok1 tok2 tok3 tok4 "
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def test_a_stream_without_include_usage_has_no_usage_chunk(http):
    _, events = stream_events(http, "fast")
    chunks = [json.loads(data) for _, data in events[:-1]]

    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)


def test_the_openai_sdk_reads_completions_and_streams(sdk):
    completion = sdk.chat.completions.create(model="steady", messages=HELLO, max_tokens=4)
    stream = sdk.chat.completions.create(
        model="steady", messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 "
    assert chunks[-1].usage.completion_tokens == 4


def test_tokens_per_s_paces_the_stream(http, sim):
    sim.configure("paced", tokens_per_s=100, output_tokens=10)

    _, events = stream_events(http, "paced")
    token_times = [at for at, data in events if data != "[DONE]" and contents([data])]

    assert len(token_times) == 10
    assert token_times[-1] - token_times[0] >= 0.08


def test_a_fixed_answer_and_a_reported_model_replace_the_defaults(http, sim):
    sim.configure("swapped", answer="The answer is 42.", report_model="gpt-4o-mini")

    body = chat(http, "swapped").json()

    assert body["choices"][0]["message"]["content"] == "The answer is 42."
    assert body["model"] == "gpt-4o-mini"


def test_the_openai_sdk_reads_embeddings_in_base64_and_float(sdk, http):
    embedded = sdk.embeddings.create(model="fast", input=["alpha", "beta", "alpha"])
    floats = http.post("/embeddings", json={"model": "fast", "input": "alpha", "encoding_format": "float"}).json()

    vectors = [item.embedding for item in embedded.data]
    assert len(vectors) == 3 and len(vectors[0]) == 8
    assert vectors[0] == vectors[2] != vectors[1]
    assert floats["data"][0]["embedding"] == pytest.approx(vectors[0], abs=1e-6)
    assert embedded.usage.total_tokens > 0


def test_models_lists_built_ins_and_configured_names(http, sim):
    sim.configure("my-model")

    names = [model["id"] for model in http.get("/models").json()["data"]]

    assert {"my-model", "steady", "fast", "flaky", "heavy-tailed", "fault-cut-midway"} <= set(names)


def test_models_report_a_context_window_as_vllm_does_and_none_for_a_model_without_one(http, sim):
    sim.configure("narrow", context_window=40)
    sim.configure("boundless")

    listed = {model["id"]: model for model in http.get("/models").json()["data"]}

    assert listed["narrow"]["max_model_len"] == 40
    assert "max_model_len" not in listed["boundless"]
    assert listed["steady"]["max_model_len"] == sim.personality("steady").context_window  # the demo's models


# Refusals


def test_it_rejects_an_unknown_key_with_401(http, sim):
    sim.keys = frozenset({"sk-the-only-good-one"})

    response = chat(http, "fast")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_it_rejects_a_missing_key_with_401(server, sim):
    response = httpx.post(f"{server.base_url}/chat/completions", json={"model": "fast", "messages": HELLO})

    assert response.status_code == 401
    assert only_attempt(sim).outcome == "unauthorized"


def test_it_answers_404_for_an_unknown_model(http):
    response = chat(http, "no-such-model")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_it_answers_400_in_openai_shape_for_bad_json(http, sim):
    truncated = b'{"model": "fast", "messages": ['
    response = http.post("/chat/completions", content=truncated, headers={"content-type": "application/json"})

    assert response.status_code == 400
    assert set(response.json()["error"]) >= {"message", "type", "code"}
    assert only_attempt(sim).outcome == "bad_request"


def test_rate_limited_answers_carry_retry_after(http, sim):
    sim.configure("limited", rate_429=1.0, retry_after_s=2)

    response = chat(http, "limited")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert only_attempt(sim).outcome == "rate_limited"


def test_server_errors_alternate_between_500_and_503(http, sim):
    sim.configure("broken", error_rate=1.0)

    statuses = [chat(http, "broken").status_code for _ in range(4)]

    assert statuses == [500, 503, 500, 503]
    assert [a.outcome for a in sim.attempts()] == ["error_500", "error_503", "error_500", "error_503"]


def test_latency_follows_the_personality_median(http, sim):
    sim.configure("twenty-ms", latency_median_ms=20, latency_p99_ms=40)

    elapsed = []
    for _ in range(30):
        started = time.monotonic()
        chat(http, "twenty-ms")
        elapsed.append(time.monotonic() - started)

    assert 0.016 <= statistics.median(elapsed) <= 0.030


def test_configure_changes_behaviour_at_run_time(http, sim):
    sim.configure("target")
    assert chat(http, "target").status_code == 200

    sim.configure("target", error_rate=1.0)

    assert chat(http, "target").status_code in (500, 503)


# Faults, as a client notices them


def test_reset_before_headers_is_a_connection_error_not_a_500(http, sdk, sim):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        chat(http, "fault-reset-before-headers")
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="fault-reset-before-headers", messages=HELLO)

    assert [(a.outcome, a.completed) for a in sim.attempts()] == [("reset_before_headers", False)] * 2


def test_silence_makes_the_client_time_out(server, sim):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.base_url}/chat/completions",
            json={"model": "fault-silence", "messages": HELLO},
            headers=AUTH,
            timeout=0.3,
        )

    assert (only_attempt(sim).outcome, only_attempt(sim).completed) == ("silence", False)


def test_slow_first_token_sends_headers_at_once_and_tokens_late(http, sim):
    sim.configure("fault-slow-first-token", fault_delay_s=0.4)
    started = time.monotonic()

    body = {"model": "fault-slow-first-token", "messages": HELLO, "stream": True}
    with http.stream("POST", "/chat/completions", json=body) as response:
        headers_after = time.monotonic() - started
        datas = [line for line in response.iter_lines() if line.startswith("data: ")]
        first_data_after = time.monotonic() - started

    assert headers_after < 0.2
    assert first_data_after >= 0.35
    assert datas[-1] == "data: [DONE]"


def test_cut_midway_breaks_the_stream_without_finish_or_done(http, sim):
    received, error = read_until_broken(http, "fault-cut-midway")

    assert isinstance(error, httpx.RemoteProtocolError)
    assert contents(received) == "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    assert finish_reasons(received) == []
    assert "[DONE]" not in received
    assert only_attempt(sim).completed is False


def test_fault_after_tokens_sets_where_a_cut_strikes(http, sim):
    sim.configure("fault-cut-midway", fault_after_tokens=3)
    received, _ = read_until_broken(http, "fault-cut-midway")

    assert contents(received) == "tok0 tok1 tok2 "


def test_fault_after_tokens_must_be_a_whole_number():
    with pytest.raises(ValueError, match="fault_after_tokens"):
        Personality(fault_after_tokens=-1)
    with pytest.raises(ValueError, match="accepts_prefill"):
        personality_from({"accepts_prefill": "no"})


PREFILLED = [*HELLO, {"role": "assistant", "content": "tok0 tok1 tok2 "}]


def test_an_assistant_prefill_is_continued_and_max_tokens_counts_only_new_tokens(http, sim):
    status, events = stream_events(http, "fast", messages=PREFILLED, max_tokens=3)

    assert status == 200
    assert contents([data for _, data in events[:-1]]) == "tok3 tok4 tok5 "
    assert only_attempt(sim).prefill == "tok0 tok1 tok2 " and only_attempt(sim).max_tokens == 3


def test_a_prefill_without_max_tokens_completes_the_usual_length(http, sim):
    body = chat(http, "fast", messages=PREFILLED).json()

    assert body["choices"][0]["message"]["content"] == "".join(f"tok{i} " for i in range(3, 16))


def test_a_fixed_answer_continues_after_the_pieces_its_prefill_spells(http, sim):
    sim.configure("fixed", answer="The sky is blue.")
    prefilled = [*HELLO, {"role": "assistant", "content": "The sky "}]

    assert chat(http, "fixed", messages=prefilled).json()["choices"][0]["message"]["content"] == "is blue."


def test_a_model_that_refuses_prefills_answers_400_and_says_so(http, sim):
    response = chat(http, "no-prefill", messages=PREFILLED, stream=True)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "prefill_unsupported"
    assert only_attempt(sim).outcome == "prefill_refused"
    assert chat(http, "no-prefill").status_code == 200  # without a prefill it answers


def test_error_midway_sends_tokens_then_an_error_event_and_ends(http, sim):
    sim.configure("fault-error-midway", fault_after_tokens=2)
    status, events = stream_events(http, "fault-error-midway")
    datas = [data for _, data in events]

    assert status == 200 and "[DONE]" not in datas
    assert contents(datas[:-1]) == "tok0 tok1 " and "error" in json.loads(datas[-1])


def test_fail_first_answers_500_that_many_times_then_recovers(http, sim):
    sim.configure("once", fail_first=1)

    assert [chat(http, "once").status_code for _ in range(3)] == [500, 200, 200]


def test_error_status_fixes_the_5xx_and_a_429_may_come_without_retry_after(http, sim):
    sim.configure("overloaded", error_rate=1, error_status=503)
    sim.configure("limited", rate_429=1, retry_after_s=None)

    assert {chat(http, "overloaded").status_code for _ in range(3)} == {503}
    limited = chat(http, "limited")
    assert limited.status_code == 429 and "retry-after" not in limited.headers


def test_context_window_and_content_filter_refuse_with_openai_400s(http, sim):
    sim.configure("small", context_window=20)
    sim.configure("strict", content_filter=True)

    assert chat(http, "small", max_tokens=8).status_code == 200  # 9 prompt tokens + 8
    too_long = chat(http, "small", max_tokens=12)
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 20 tokens" in too_long.json()["error"]["message"]
    filtered = chat(http, "strict")
    assert filtered.status_code == 400 and filtered.json()["error"]["code"] == "content_filter"


def test_cut_midway_truncates_a_non_streaming_body(http):
    with pytest.raises(httpx.RemoteProtocolError):
        chat(http, "fault-cut-midway")


def test_stall_goes_quiet_midway_then_finishes(http, sim):
    sim.configure("fault-stall", fault_delay_s=0.4)

    _, events = stream_events(http, "fault-stall")
    gaps = [later - earlier for (earlier, _), (later, _) in zip(events, events[1:], strict=False)]

    assert max(gaps) >= 0.35  # timers may fire a millisecond early
    assert contents([data for _, data in events[:-1]]) == "".join(f"tok{i} " for i in range(16))
    assert events[-1][1] == "[DONE]"


def test_malformed_chunk_puts_one_invalid_json_event_midway(http):
    _, events = stream_events(http, "fault-malformed-chunk")

    broken = []
    for index, (_, data) in enumerate(events[:-1]):
        try:
            json.loads(data)
        except ValueError:
            broken.append(index)
    assert len(broken) == 1 and 0 < broken[0] < len(events) - 2
    assert events[-1][1] == "[DONE]"


def test_no_done_finishes_the_stream_without_the_done_marker(http):
    _, events = stream_events(http, "fault-no-done")
    datas = [data for _, data in events]

    assert "[DONE]" not in datas
    assert finish_reasons(datas) == ["stop"]


def test_error_first_event_is_a_200_stream_opening_with_an_error(http, sdk):
    status, events = stream_events(http, "fault-error-first-event")

    assert status == 200
    assert [json.loads(data)["error"]["code"] for _, data in events] == ["upstream_error"]
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model="fault-error-first-event", messages=HELLO, stream=True))


def test_a_context_window_refuses_a_prompt_and_max_tokens_that_exceed_it_as_openai_does(http, sdk, sim):
    sim.configure("small", context_window=20)  # HELLO is 9 tokens

    assert chat(http, "small", max_tokens=11).status_code == 200
    refused = chat(http, "small", max_tokens=12)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
    assert "maximum context length is 20 tokens" in error["message"] and "21 tokens" in error["message"]
    assert sim.attempts()[-1].outcome == "context_length"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="small", messages=HELLO, max_tokens=12)


def test_the_context_length_fault_refuses_whatever_the_prompt(http, sim):
    refused = chat(http, "fault-context-length", max_tokens=1)

    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"
    assert only_attempt(sim).outcome == "context_length"
    with pytest.raises(ValueError):
        Personality(context_window=0)


def test_fault_rate_zero_never_misbehaves(http, sim):
    sim.configure("fault-cut-midway", fault_rate=0.0)

    assert chat(http, "fault-cut-midway").status_code == 200


# The attempt log and the control endpoints


def test_the_attempt_log_keeps_outcome_and_only_the_keys_last_4(http, sim, server):
    chat(http, "fast", stream=True)
    chat(http, "nope")

    attempts = sim.attempts()
    published = httpx.get(f"{server.url}/_sim/attempts").text

    assert [(a.model, a.stream, a.outcome, a.completed) for a in attempts] == [
        ("fast", True, "ok", True),
        ("nope", False, "not_found", True),
    ]
    assert {a.key for a in attempts} == {"…a1b2"}
    assert KEY not in repr(attempts) and KEY not in published
    assert [a.model for a in sim.attempts(model="nope")] == ["nope"]


def test_control_endpoints_set_a_model_and_clear_the_log(http, server, sim):
    put = httpx.put(f"{server.url}/_sim/models/custom", json={"base": "fast", "answer": "hi there"})
    answer = chat(http, "custom").json()["choices"][0]["message"]["content"]
    cleared = httpx.delete(f"{server.url}/_sim/attempts")

    assert put.status_code == 200
    assert answer == "hi there"
    assert cleared.json() == {"deleted": 1}
    assert sim.attempts() == []
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}


def test_putting_a_bad_personality_is_refused(server):
    response = httpx.put(f"{server.url}/_sim/models/custom", json={"error_rate": 3})

    assert response.status_code == 400
    assert "error_rate" in response.json()["error"]["message"]


def test_personalities_reject_nonsense():
    with pytest.raises(ValueError):
        Personality(error_rate=1.5)
    with pytest.raises(ValueError):
        personality_from({"latency_median_ms": 10, "colour": "blue"})
    assert personality_from({"fault": "stall"}).fault is Fault.STALL


def test_stop_is_prompt_while_a_silent_request_is_pending():
    server = SimulatorServer().start()
    errors = []

    def call():
        body = {"model": "fault-silence", "messages": HELLO}
        try:
            httpx.post(f"{server.base_url}/chat/completions", json=body, headers=AUTH, timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while not server.simulator.attempts() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    stopped_after = time.monotonic() - started
    caller.join(3)

    assert stopped_after < 2
    assert [type(exc) for exc in errors] in ([httpx.RemoteProtocolError], [httpx.ReadError])


# The management command's inputs


def test_simulate_reads_personalities_from_a_json_config(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"gpt-sim": {"base": "steady", "error_rate": 0.5}, "quick": "fast"}))

    models = read_config(str(path))

    assert models["gpt-sim"] == Personality(latency_median_ms=40, latency_p99_ms=80, tokens_per_s=200, error_rate=0.5,
                                            context_window=128_000)
    assert models["quick"] == Personality()


def test_simulate_refuses_a_bad_config_or_empty_keys(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"gpt-sim": {"fault": "explode"}}))

    with pytest.raises(CommandError, match="gpt-sim"):
        read_config(str(path))
    with pytest.raises(CommandError):
        parse_keys(" , ")
    assert parse_keys("k1, k2") == {"k1", "k2"}
