"""An upstream whose `usage` is not token counts gave a malformed answer: before the first byte the gateway fails
over (a malformed failure booked against the deployment), after it the stream ends with an error event."""

import asyncio

import orjson
import pytest

from probes.models import Rollup
from routing.loopback import ThreadedServer
from routing.models import Deployment
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat
from tests.routing.gateway.test_fallbacks import add_fallbacks

pytestmark = pytest.mark.django_db(transaction=True)

BAD_USAGE = {
    "text": {"prompt_tokens": "abc", "completion_tokens": 2},
    "object": {"prompt_tokens": 3, "completion_tokens": {"n": 2}},
    "list": [3, 2],
    "negative": {"prompt_tokens": -3, "completion_tokens": 2},
}


def chunk(choices, usage=None):
    payload = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class BadUsageUpstream:
    """Answers model "<kind>" with BAD_USAGE[kind]. A stream carries it in its last chunk, sent with the text
    ("<kind>") or 50 ms after it ("<kind>-late"), or in every chunk from the first ("<kind>-every")."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        kind, _, when = request["model"].partition("-")
        if request.get("stream"):
            await self._stream(send, BAD_USAGE[kind], when)
            return
        choice = {"index": 0, "message": {"role": "assistant", "content": "bad"}, "finish_reason": "stop"}
        answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m", "usage": BAD_USAGE[kind],
                  "choices": [choice]}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})

    async def _stream(self, send, usage, when):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        every = usage if when == "every" else None
        text = chunk([{"index": 0, "delta": {"content": "bad"}, "finish_reason": None}], every)
        text += chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], every)
        rest = chunk([], usage) + b"data: [DONE]\n\n"
        if when == "late":
            await send({"type": "http.response.body", "body": text, "more_body": True})
            await asyncio.sleep(0.05)
            text = b""
        await send({"type": "http.response.body", "body": text + rest})


@pytest.fixture
def bad_usage(sim, serve_gateway, settings):
    """start(model) -> (gateway, client key): deployment "bad" (100 %) answers `model`; "spare" (the simulator)
    is its fallback."""
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    upstream = ThreadedServer(BadUsageUpstream()).start()

    def start(model):
        route = make_route("r", make_provider(upstream, name="bad-usage"), {"bad": (model, 100)})
        add_fallbacks(route, make_provider(sim, name="sim"), {"spare": "fast"})
        key = client_key()  # before the gateway starts: its first snapshot holds the key
        return serve_gateway(), key

    yield start
    upstream.stop()


def malformed_booked(gateway):
    """Return the malformed count of deployment "bad" in the rollups (after a flush)."""
    gateway.gateway.recorder.flush()
    rows = Rollup.objects.filter(source="traffic", deployment=Deployment.objects.get(name="bad"))
    return sum(row.errors.get("malformed", 0) for row in rows)


def sse_payloads(text):
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


@pytest.mark.parametrize("kind", sorted(BAD_USAGE))
def test_an_answer_with_usage_that_is_not_token_counts_fails_over_and_is_booked_malformed(bad_usage, kind):
    gateway, key = bad_usage(kind)
    response = post_chat(gateway, key, "r", max_tokens=2)
    assert response.status_code == 200, response.text
    assert response.headers["x-weathervane-fallback"] == "spare"
    assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 "
    assert response.json()["usage"]["completion_tokens"] == 2
    assert malformed_booked(gateway) >= 1
    assert gateway.gateway.breakers.by_deployment[Deployment.objects.get(name="bad").pk].consecutive >= 1


@pytest.mark.parametrize("kind", ["text", "list"])
def test_a_stream_with_bad_usage_before_the_first_byte_fails_over(bad_usage, kind):
    gateway, key = bad_usage(f"{kind}-every")
    response = post_chat(gateway, key, "r", stream=True, max_tokens=2, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.headers["x-weathervane-fallback"] == "spare"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]" and "bad" not in response.text
    assert orjson.loads(payloads[-2])["usage"]["completion_tokens"] == 2
    assert malformed_booked(gateway) >= 1


@pytest.mark.parametrize("model", ["text", "text-late"])
def test_a_committed_stream_whose_usage_is_bad_ends_with_an_error_event_and_is_booked_malformed(bad_usage, model):
    gateway, key = bad_usage(model)
    response = post_chat(gateway, key, "r", stream=True, max_tokens=2, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.headers["x-weathervane-deployment"] == "bad"
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    assert orjson.loads(payloads[0])["choices"][0]["delta"]["content"] == "bad"
    error = orjson.loads(payloads[-1])["error"]
    assert "usage.prompt_tokens is not a token count" in error["message"]
    assert malformed_booked(gateway) == 1
