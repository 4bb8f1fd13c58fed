"""Serving the gateway alone on uvicorn (uvloop + httptools, no access log):
`run()` backs `manage.py gateway`; `GatewayServer` runs one in a background
thread on loopback for tests and demos."""

import gc
import os

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from routing.loopback import ThreadedServer


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits it lacks (it accepts 10 MB of headers, and waits for
    headers forever): request line + headers at most WEATHERVANE_MAX_HEADER_BYTES (else 431), and complete
    within WEATHERVANE_HEADER_TIMEOUT seconds of the connection opening or going idle (else closed).
    Bodies are not buffered here: the gateway streams them and answers 413 past its own limit."""

    def connection_made(self, transport):
        from django.conf import settings

        self.max_header_bytes = settings.SERVER_MAX_HEADER_BYTES
        self.header_timeout_s = settings.SERVER_HEADER_TIMEOUT_S
        self.header_bytes = 0
        self.awaiting_headers = True
        super().connection_made(transport)
        self.header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def data_received(self, data):
        if self.awaiting_headers:
            end = data.find(b"\r\n\r\n")
            self.header_bytes += len(data) if end < 0 else end
            if self.header_bytes > self.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large",
                             b"Request line and headers are larger than %d bytes." % self.max_header_bytes)
                return
        super().data_received(data)

    def on_headers_complete(self):
        self.awaiting_headers = False
        self.header_deadline.cancel()
        super().on_headers_complete()

    def on_message_complete(self):
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before the body was in (e.g. a 413): the next request may start
            self._await_next_request()

    def on_response_complete(self):
        super().on_response_complete()
        if self.cycle.more_body is False:  # the request's body is all in: the next bytes are the next request's
            self._await_next_request()

    def _await_next_request(self):
        if not self.transport.is_closing():
            self.header_deadline.cancel()
            self.header_bytes, self.awaiting_headers = 0, True
            self.header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def connection_lost(self, exc):
        self.header_deadline.cancel()
        super().connection_lost(exc)

    def _headers_too_slow(self):
        if self.awaiting_headers and not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status, message):
        self.header_deadline.cancel()
        self.awaiting_headers = False
        head = b"HTTP/1.1 %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        self.transport.write(head % (status, len(message)) + message)
        self.transport.close()


UVICORN_OPTIONS = {
    "http": LimitedHttpToolsProtocol,
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "proxy_headers": False,  # a middleware layer per request; the gateway reads no forwarded headers
    "server_header": False,
    "date_header": False,
}


def create_app():
    """uvicorn factory: one Gateway per worker process (Django set up first).

    Raises KeysDiverge (uvicorn does not start) when this process's secret-encryption keys cannot read the
    database's secrets: uvicorn run directly skips manage.py's system checks (routing/keycheck.py).
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    import django

    django.setup()
    from routing.gateway.app import Gateway
    from routing.keycheck import verify_at_start

    verify_at_start()

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
