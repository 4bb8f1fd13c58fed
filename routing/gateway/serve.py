"""Serving the gateway alone on uvicorn (uvloop + httptools, no access log):
`run()` backs `manage.py gateway`; `GatewayServer` runs one in a background
thread on loopback for tests and demos."""

import gc
import os
import socket
import threading
import time

import uvicorn

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


class GatewayServer:
    """A Gateway served on loopback from a background thread; a context manager.

    `gateway` is a routing.gateway.app.Gateway (a default one is made when None).
    """

    def __init__(self, gateway=None, host="127.0.0.1", port=0):
        if gateway is None:
            from routing.gateway.app import Gateway

            gateway = Gateway()
        self.gateway = gateway
        self.host = host
        self.port = port
        self._server = None
        self._thread = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self):
        return f"{self.url}/v1"

    def start(self, timeout=10.0):
        sock = socket.create_server((self.host, self.port), backlog=2048)
        self.port = sock.getsockname()[1]
        options = {**UVICORN_OPTIONS, "loop": "none"}
        config = uvicorn.Config(self.gateway, log_level="warning", log_config=None, timeout_graceful_shutdown=2, **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"gateway-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start on {self.url}")
            time.sleep(0.005)
        return self

    def _serve(self, sock):
        import uvloop

        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            loop.close()
            sock.close()

    def stop(self, timeout=10.0):
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(1.0)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

