"""An upstream that echoes the key it was sent, in error bodies, error events and headers: the key must
still appear nowhere: not in what the client receives, the database (key state, audit rows, events,
request log, probe results), the logs, /metrics, the live (WebSocket) payloads, or any API or page."""

import json

import orjson
import pytest

from dashboard import live
from probes.models import ProbeTarget
from probes.runner import run_probe
from routing.loopback import ThreadedServer
from routing.models import ApiKey, KeyState
from tests.routing.gateway.helpers import client_key, make_provider, make_route, post_chat, scrape
from tests.routing.test_secrets import assert_nowhere, crawl, new_marker

pytestmark = pytest.mark.django_db(transaction=True)


class EchoingUpstream:
    """Answers every call with an error that quotes the Authorization header it got, the way the model asks."""

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = orjson.loads(body or b"{}").get("model", "")
        echo = [(b"x-echo-authorization", auth.encode()), (b"content-type", b"application/json")]
        if model == "echo-stream":
            event = orjson.dumps({"error": {"message": f"bad token {auth}", "type": "server_error"}})
            await _answer(send, 200, [(b"content-type", b"text/event-stream")], b"data: " + event + b"\n\n")
        elif model == "echo-400":
            await _answer(send, 400, echo, orjson.dumps({"error": {"message": f"Unsupported for {auth}"}}))
        else:
            await _answer(send, 401, echo, orjson.dumps({"error": {"message": f"Incorrect API key provided: {auth}"}}))


async def _answer(send, status, headers, body):
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def published(monkeypatch):
    """Every payload the live module would send to open dashboards (what the WebSocket relays)."""
    sent = []
    original = live._send
    monkeypatch.setattr(live, "_send", lambda kind, payload, group=live.GROUP_ALL: (
        sent.append(json.dumps({"type": kind, "payload": payload}, default=str)), original(kind, payload, group)))
    return sent


def test_a_key_the_upstream_echoes_back_appears_nowhere(serve_gateway, metrics_token, admin_api, admin_user,
                                                         published, logged_sql, settings):
    from django.test import Client

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    marker = new_marker()
    with ThreadedServer(EchoingUpstream()) as upstream:
        provider = make_provider(upstream, keys=(marker,))
        make_route("rejects", provider, {"d400": ("echo-400", 100)})
        make_route("streams", provider, {"dstream": ("echo-stream", 100)})
        make_route("refuses", provider, {"d401": ("echo-401", 100)})
        probed = make_provider(upstream, name="probed", keys=(marker,))
        make_route("probed", probed, {"dprobe": ("echo-401", 100)})
        client = client_key()
        gateway = serve_gateway()
        answers = [post_chat(gateway, client, "rejects"),  # a 400: passed through to the client as it came
                   post_chat(gateway, client, "streams", stream=True)]  # an error event quoting the key
        answers += [post_chat(gateway, client, "refuses") for _ in range(2)]  # the second 401 confirms it invalid
        answers.append(scrape(gateway))
        gateway.stop()  # flushes: key state, audit, events, request log, rollups, live pushes

        target = ProbeTarget.objects.get(deployment__name="dprobe", api_key=None)
        result = run_probe(target.pk, slot=1)

    assert [a.status_code for a in answers] == [400, 502, 502, 502, 200]
    assert result.outcome == "bad_key" and "Incorrect API key provided" in result.error
    assert set(ApiKey.objects.values_list("state", flat=True)) == {KeyState.INVALID}  # by the gateway and the probe
    said = [everything_said_httpx(a) for a in answers]
    assert not [text for text in said if marker in text], "the client received the key"
    assert published, "nothing was published live"
    assert not [frame for frame in published if marker in frame], "a live payload carried the key"
    browser = Client()
    browser.force_login(admin_user)
    assert_nowhere([marker], crawl(admin_api, browser), logged_sql)


def everything_said_httpx(response):
    return response.text + json.dumps(dict(response.headers))
