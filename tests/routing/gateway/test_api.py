"""The gateway's HTTP surface: pass-through, headers, /v1/models, /metrics,
and every error status in OpenAI's error shape."""

import httpx
import orjson
import pytest

from tests.routing.gateway.helpers import (
    METRICS_TOKEN,
    client_key,
    make_provider,
    make_route,
    post_chat,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-test-key-0001"
HEADERS = ("x-request-id", "x-weathervane-route", "x-weathervane-deployment", "x-weathervane-attempts",
           "x-weathervane-overhead-ms")


@pytest.fixture
def chat_gateway(sim, serve_gateway):
    """Route "chat" -> deployment "sim-fast" (upstream model "fast"), a key for every route, a gateway."""
    provider = make_provider(sim)
    make_route("chat", provider, {"sim-fast": ("fast", 100)})
    key = client_key()
    return sim, serve_gateway(), key


def events_of(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def test_it_passes_a_chat_completion_through_with_its_headers(chat_gateway):
    sim, gateway, key = chat_gateway
    response = post_chat(gateway, key, "chat")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].startswith("tok0 tok1 ")
    assert response.json()["usage"]["completion_tokens"] > 0
    assert response.headers["x-weathervane-route"] == "chat"
    assert response.headers["x-weathervane-deployment"] == "sim-fast"
    assert response.headers["x-weathervane-attempts"] == "1"
    assert 0 <= float(response.headers["x-weathervane-overhead-ms"]) < 1000
    assert [a.model for a in sim.simulator.attempts()] == ["fast"]  # the upstream got its own model name
    assert sim.simulator.attempts()[0].key == "…" + SECRET[-4:]


def test_it_keeps_a_client_request_id(chat_gateway):
    _, gateway, key = chat_gateway
    response = post_chat(gateway, key, "chat", headers={"x-request-id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    first = post_chat(gateway, key, "chat").headers["x-request-id"]
    assert first != post_chat(gateway, key, "chat").headers["x-request-id"]


def test_it_streams_and_leaves_out_the_usage_chunk_the_client_did_not_ask_for(chat_gateway):
    _, gateway, key = chat_gateway
    plain = post_chat(gateway, key, "chat", stream=True)
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/event-stream")
    events = events_of(plain.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("tok0 tok1 ")

    with_usage = post_chat(gateway, key, "chat", stream=True, stream_options={"include_usage": True})
    last = orjson.loads(events_of(with_usage.text)[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == len(text.split())


def test_it_passes_embeddings_through(chat_gateway):
    sim, gateway, key = chat_gateway
    response = httpx.post(f"{gateway.base_url}/embeddings", json={"model": "chat", "input": ["a", "b"]},
                          headers={"Authorization": f"Bearer {key.plaintext}"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2
    assert sim.simulator.attempts()[-1].path == "/v1/embeddings"


def test_models_lists_only_the_routes_the_key_may_use(sim, serve_gateway):
    provider = make_provider(sim)
    allowed = make_route("allowed", provider, {"d1": ("fast", 100)})
    make_route("hidden", provider, {"d2": ("fast", 100)})
    limited, everything = client_key("limited", routes=[allowed]), client_key("all")
    gateway = serve_gateway()

    def models(key, suffix=""):
        return httpx.get(f"{gateway.base_url}/models{suffix}", headers={"Authorization": f"Bearer {key.plaintext}"})

    assert [m["id"] for m in models(limited).json()["data"]] == ["allowed"]
    assert [m["id"] for m in models(everything).json()["data"]] == ["allowed", "hidden"]
    assert models(limited, "/allowed").json()["id"] == "allowed"
    hidden = models(limited, "/hidden")
    assert hidden.status_code == 404 and "Available models: allowed." in hidden.json()["error"]["message"]
    assert httpx.get(f"{gateway.base_url}/models").status_code == 401


def assert_openai_error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    for header in HEADERS:
        assert header in response.headers
    return error


def test_a_missing_or_wrong_gateway_key_gets_401(chat_gateway):
    sim, gateway, key = chat_gateway
    assert_openai_error(post_chat(gateway, None, "chat"), 401, "invalid_api_key")
    wrong = post_chat(gateway, None, "chat", headers={"Authorization": "Bearer wv-not-a-real-key"})
    assert_openai_error(wrong, 401, "invalid_api_key")
    bare = post_chat(gateway, None, "chat", headers={"Authorization": key.plaintext})
    assert_openai_error(bare, 401, "invalid_api_key")
    assert sim.simulator.attempts() == []


def test_a_route_the_key_may_not_use_gets_403(sim, serve_gateway):
    provider = make_provider(sim)
    mine = make_route("mine", provider, {"d1": ("fast", 100)})
    make_route("theirs", provider, {"d2": ("fast", 100)})
    key = client_key("limited", routes=[mine])
    error = assert_openai_error(post_chat(serve_gateway(), key, "theirs"), 403, "model_not_allowed")
    assert error["param"] == "model" and sim.simulator.attempts() == []


def test_an_unknown_model_gets_404_listing_the_available_ones(chat_gateway):
    sim, gateway, key = chat_gateway
    error = assert_openai_error(post_chat(gateway, key, "gpt-nope"), 404, "model_not_found")
    assert "gpt-nope" in error["message"] and "Available models: chat." in error["message"]


@pytest.mark.parametrize("body, param, fragment", [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"", None, "empty"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "'model' is required"),
    (b'{"model": "chat"}', "messages", "'messages' must be a non-empty list"),
    (b'{"model": "chat", "messages": []}', "messages", "non-empty"),
    (b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream", "true or false"),
])
def test_a_malformed_body_gets_400_naming_the_problem(chat_gateway, body, param, fragment):
    sim, gateway, key = chat_gateway
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {key.plaintext}", "Content-Type": "application/json"})
    error = assert_openai_error(response, 400, response.json()["error"]["code"])
    assert fragment in error["message"] and error["param"] == param
    assert sim.simulator.attempts() == []


def test_an_oversized_body_gets_413(sim, serve_gateway):
    provider = make_provider(sim)
    make_route("chat", provider, {"sim-fast": ("fast", 100)})
    key = client_key()
    gateway = serve_gateway(max_body=2048)
    big = "x" * 5000
    too_big = post_chat(gateway, key, "chat", messages=[{"role": "user", "content": big}])
    assert_openai_error(too_big, 413, "request_too_large")
    assert sim.simulator.attempts() == []


def test_wrong_methods_and_paths_get_openai_errors(chat_gateway):
    _, gateway, key = chat_gateway
    auth = {"Authorization": f"Bearer {key.plaintext}"}
    assert_openai_error(httpx.get(f"{gateway.base_url}/chat/completions", headers=auth), 405, "method_not_allowed")
    assert_openai_error(httpx.get(f"{gateway.base_url}/assistants", headers=auth), 404, "unknown_url")


def test_an_upstream_400_is_passed_through_and_never_retried(chat_gateway):
    sim, gateway, key = chat_gateway
    response = post_chat(gateway, key, "chat", max_tokens=-1)  # the simulator rejects it
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_value"
    assert response.headers["x-weathervane-attempts"] == "1" and len(sim.simulator.attempts()) == 1


def test_a_context_length_error_is_not_retried_on_another_target(sim, serve_gateway):
    sim.simulator.configure("short-context", error_rate=0.0)
    provider = make_provider(sim)
    make_route("chat", provider, {"a": ("no-such-model", 50), "b": ("also-missing", 50)})
    key = client_key()
    response = post_chat(serve_gateway(), key, "chat")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert len(sim.simulator.attempts()) == 1  # a 404 from upstream fails the same everywhere


def test_it_answers_502_naming_what_it_tried_when_every_option_failed(sim, serve_gateway):
    sim.simulator.configure("broken", error_rate=1.0)
    provider = make_provider(sim)
    make_route("chat", provider, {"broken-1": ("broken", 50), "broken-2": ("broken", 50)})
    key = client_key()
    error = assert_openai_error(post_chat(serve_gateway(), key, "chat"), 502, "upstream_failed")
    assert "broken-1 with key 'key1'" in error["message"] and "broken-2 with key 'key1'" in error["message"]
    assert "server_error" in error["message"]
    assert len(sim.simulator.attempts("broken")) == 4  # one retry on each target, then both used up
    assert SECRET not in error["message"]


def test_it_answers_504_when_every_attempt_timed_out(sim, serve_gateway):
    provider = make_provider(sim, read_timeout=0.5)
    make_route("chat", provider, {"silent": ("fault-silence", 100)})
    key = client_key()
    response = post_chat(serve_gateway(), key, "chat")
    error = assert_openai_error(response, 504, "upstream_timeout")
    # a silent target is not tried twice
    assert "timeout" in error["message"] and response.headers["x-weathervane-attempts"] == "1"


def test_it_answers_503_when_no_key_is_usable(sim, serve_gateway):
    provider = make_provider(sim, keys=())
    make_route("chat", provider, {"keyless": ("fast", 100)})
    key = client_key()
    error = assert_openai_error(post_chat(serve_gateway(), key, "chat"), 503, "no_capacity")
    assert "no usable key" in error["message"] and sim.simulator.attempts() == []


def test_metrics_expose_requests_attempts_and_latency(chat_gateway, metrics_token):
    _, gateway, key = chat_gateway
    for _ in range(3):
        post_chat(gateway, key, "chat")
    post_chat(gateway, None, "chat")
    text = scrape(gateway).text
    assert 'weathervane_gateway_requests_total{deployment="sim-fast",outcome="ok",route="chat"} 3.0' in text
    assert 'weathervane_gateway_requests_total{deployment="-",outcome="rejected",route="-"} 1.0' in text
    assert 'weathervane_gateway_upstream_attempts_total{deployment="sim-fast",outcome="ok"} 3.0' in text
    assert 'weathervane_gateway_request_duration_seconds_count{deployment="sim-fast",route="chat"} 3.0' in text
    assert "weathervane_gateway_ttft_seconds" in text and "weathervane_gateway_circuit_state" in text


@pytest.mark.parametrize("authorization",
                         [None, "Bearer wrong-token", f"Basic {METRICS_TOKEN}", f"Token {METRICS_TOKEN}"])
def test_metrics_refuse_a_scrape_without_the_token(chat_gateway, metrics_token, authorization):
    _, gateway, key = chat_gateway
    post_chat(gateway, key, "chat")
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{gateway.url}/metrics", headers=headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    assert "weathervane_gateway" not in response.text and "sim-fast" not in response.text
    assert "WEATHERVANE_METRICS_TOKEN" in response.json()["error"]["message"]


def test_metrics_are_closed_when_no_token_is_configured(chat_gateway, settings):
    settings.METRICS_TOKEN = ""
    _, gateway, _ = chat_gateway
    assert scrape(gateway).status_code == 401
    assert httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer"}).status_code == 401


def test_every_gateway_response_forbids_content_type_sniffing(chat_gateway, metrics_token):
    _, gateway, key = chat_gateway
    answers = [
        post_chat(gateway, key, "chat"),  # relayed JSON
        post_chat(gateway, key, "chat", stream=True),  # relayed stream
        post_chat(gateway, key, "chat", max_tokens=-1),  # the upstream's own 400, passed through
        post_chat(gateway, None, "chat"),  # the gateway's own 401
        httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {key.plaintext}"}),
        scrape(gateway),
    ]
    assert [a.headers.get("x-content-type-options") for a in answers] == ["nosniff"] * len(answers)


@pytest.mark.parametrize("given", [b"trace-123\n", b"trace-123\r\nx-injected: 1", b"", b"x" * 101, b"trace 123"])
async def test_a_client_request_id_that_is_not_a_plain_token_is_replaced(given):
    from routing.gateway.app import Gateway, GatewayConfig

    sent = []
    scope = {"type": "http", "method": "GET", "path": "/nowhere", "headers": [(b"x-request-id", given)]}
    gateway = Gateway(GatewayConfig.from_settings())
    gateway.started = True  # /nowhere needs no snapshot, session or database
    await gateway(scope, None, lambda message: _append(sent, message))
    request_id = dict(sent[0]["headers"])[b"x-request-id"]
    assert request_id != given and request_id.startswith(b"req_")


async def _append(messages, message):
    messages.append(message)


def test_a_deleted_route_answers_404_like_an_unknown_model_and_its_keys_still_work(sim, serve_gateway):
    from routing import deletion

    provider = make_provider(sim)
    chat = make_route("chat", provider, {"sim-fast": ("fast", 100)})
    make_route("other", provider, {"sim-other": ("fast", 100)})
    limited, everything = client_key("demo traffic", routes=[chat]), client_key("demo app")
    gateway = serve_gateway()
    assert post_chat(gateway, limited, "chat").status_code == 200

    deletion.delete(chat, actor="test")

    gone = wait_until(lambda: post_chat(gateway, everything, "chat").status_code == 404)
    assert gone, "the gateway still serves the deleted route"
    error = assert_openai_error(post_chat(gateway, everything, "chat"), 404, "model_not_found")
    assert "Available models: other." in error["message"]
    assert post_chat(gateway, everything, "other").status_code == 200
    models = httpx.get(f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {limited.plaintext}"})
    assert models.status_code == 200 and models.json()["data"] == []  # authenticated, with nothing left to call
