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
from routing.gateway.app import mount  # noqa: E402


def _refuse_diverging_keys():
    """Daphne runs no system checks: with a shared database, check the encryption keys here (routing/keycheck.py)."""
    from django.conf import settings

    if settings.DATABASE_URL:
        from routing.keycheck import verify_at_start

        verify_at_start()


_refuse_diverging_keys()
http_app = mount(django_app)
gateway = http_app.gateway  # Daphne sends no lifespan events: `serve` calls gateway.close() on a clean stop

application = ProtocolTypeRouter({
    "http": http_app,
    "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
