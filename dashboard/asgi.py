"""ASGI entry point: Django (pages, API, admin), WebSockets, and the gateway at /v1/.

One process serves everything in the embedded mode; the gateway also runs
alone on uvicorn (`manage.py gateway`) for throughput.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.origins import SameOriginValidator  # noqa: E402
from dashboard.urls import websocket_urlpatterns  # noqa: E402


def _http_app():
    try:
        from routing.gateway.app import mount
    except ImportError:  # the gateway module is optional until it lands
        return django_app
    return mount(django_app)


application = ProtocolTypeRouter({
    "http": _http_app(),
    "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
