"""Serving the gateway alone on uvicorn (uvloop + httptools, no access log):
`run()` backs `manage.py gateway`; `GatewayServer` runs one in a background
thread on loopback for tests and demos."""

import gc
import os

import uvicorn

from routing.loopback import ThreadedServer

UVICORN_OPTIONS = {
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "proxy_headers": False,  # a middleware layer per request; the gateway reads no forwarded headers
    "server_header": False,
    "date_header": False,
}


def create_app():
    """uvicorn factory: one Gateway per worker process (Django set up first)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from routing.gateway.app import Gateway

    gateway = Gateway()
    # Django's import-time heap is large and immortal in practice; leaving it to the
    # cyclic GC made every full collection scan it (p99 spikes of ~100 ms at c=50).
    gc.collect()
    gc.freeze()
    return gateway


def run(host="127.0.0.1", port=8080, workers=1, log_level="info"):
    """Serve the gateway in the foreground until interrupted."""
    uvicorn.run("routing.gateway.serve:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, backlog=2048, timeout_graceful_shutdown=5, **UVICORN_OPTIONS)


class GatewayServer(ThreadedServer):
    """A Gateway served on loopback from a background thread; a context manager.

    `gateway` is a routing.gateway.app.Gateway (a default one is made when None).
    """

    name = "gateway"

    def __init__(self, gateway=None, host="127.0.0.1", port=0):
        if gateway is None:
            from routing.gateway.app import Gateway

            gateway = Gateway()
        self.gateway = gateway
        super().__init__(gateway, host=host, port=port, options={**UVICORN_OPTIONS, "loop": "none"}, graceful_s=2)

    def start(self, timeout=10.0):
        return super().start(timeout)

    def stop(self, timeout=10.0):
        super().stop(timeout)
