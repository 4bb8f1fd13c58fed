"""The embedded single process: dashboard.asgi sends /v1/ and /metrics to the gateway, the rest to Django."""

import httpx
import pytest

from routing.gateway.app import Gateway, GatewayConfig, mount
from tests.routing.gateway.helpers import FAST, METRICS_TOKEN, client_key, make_provider, make_route

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_project_asgi_app_mounts_the_gateway():
    from dashboard.asgi import application

    assert hasattr(application.application_mapping["http"], "gateway")


@pytest.fixture
async def embedded():
    async def django_app(scope, receive, send):  # stands in for Django: it must see everything else
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"django saw {scope['path']}".encode()})

    app = mount(django_app, Gateway(GatewayConfig.from_settings(**FAST)))
    yield app
    await app.gateway.stop()


async def test_v1_goes_to_the_gateway_and_the_rest_to_django(sim, embedded, metrics_token):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(lambda: (make_route("r", make_provider(sim), {"d": ("fast", 100)}), client_key())[1])()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=embedded), base_url="http://testserver") as client:
        models = await client.get("/v1/models", headers={"Authorization": f"Bearer {key.plaintext}"})
        assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["r"]
        chat = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key.plaintext}"},
                                 json={"model": "r", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "tok0 tok1 "
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.text.startswith("# HELP")
        assert (await client.get("/api/v1/routes/")).text == "django saw /api/v1/routes/"
        assert (await client.get("/v1")).text == "django saw /v1"


async def test_lifespan_starts_and_stops_the_gateway(embedded):
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message["type"])

    await embedded({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not embedded.gateway.started


def _session_cookie(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


@pytest.mark.parametrize(("who", "status"), [("admin_user", 200), ("viewer_user", 401), ("outsider_user", 401)])
async def test_metrics_open_to_a_staff_session_on_the_control_plane(embedded, request, who, status):
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(lambda: _session_cookie(request.getfixturevalue(who)))()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=embedded), base_url="http://testserver") as client:
        assert (await client.get("/metrics")).status_code == 401
        response = await client.get("/metrics", headers={"Cookie": cookie})
    assert response.status_code == status
    assert response.text.startswith("# HELP") == (status == 200)


async def test_metrics_refuse_a_staff_session_that_was_logged_out_or_deactivated(embedded, admin_user):
    from asgiref.sync import sync_to_async

    cookie = await sync_to_async(_session_cookie)(admin_user)
    admin_user.is_active = False
    await sync_to_async(admin_user.save)()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=embedded), base_url="http://testserver") as client:
        assert (await client.get("/metrics", headers={"Cookie": cookie})).status_code == 401
