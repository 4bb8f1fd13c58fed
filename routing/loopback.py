"""Serve an ASGI app from a background thread on loopback, with uvicorn.

Tests, the embedded demo and benchmarks start the simulator and the gateway
this way. Django is not imported here, so the simulator stays free of it.
"""

import asyncio
import importlib.util
import socket
import threading
import time

import uvicorn

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def new_event_loop():
    if HAS_UVLOOP:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class ThreadedServer:
    """An ASGI app served on `host:port` (port 0 picks a free one) from a daemon thread.

    Use as a context manager, or call start() and stop(). Subclasses may
    override `_while_stopping()`, called repeatedly until the thread ends.
    """

    name = "server"

    def __init__(self, app, host="127.0.0.1", port=0, options=None, graceful_s=1.0):
        self.app = app
        self.host = host
        self.port = port
        self.options = options or {}
        self.graceful_s = graceful_s
        self._server = None
        self._thread = None
        self._loop = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self):
        return f"{self.url}/v1"

    def start(self, timeout=5.0):
        """Start serving and return self once connections are accepted.

        Raises RuntimeError when uvicorn does not come up within timeout.
        """
        sock = socket.create_server((self.host, self.port), backlog=2048)
        self.port = sock.getsockname()[1]
        # log_config=None leaves the host process's logging (Django's, pytest's) alone.
        config = uvicorn.Config(self.app, log_level="warning", log_config=None,
                                timeout_graceful_shutdown=self.graceful_s, **self.options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} did not start on {self.url}")
            time.sleep(0.005)
        return self

    def _serve(self, sock):
        loop = self._loop = new_event_loop()
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            loop.close()
            sock.close()

    def stop(self, timeout=2.0):
        """Stop serving; return once the thread ended, or after timeout at the latest."""
        if self._thread is None:
            return
        self._server.should_exit = True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._while_stopping()
            self._thread.join(0.05)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(1.0)
        self._thread = None

    def _while_stopping(self):
        pass

    def call_in_loop(self, func):
        """Run `func` on the server's event loop soon; a no-op once the loop is closed."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(func)
            except RuntimeError:
                pass  # the loop closed between the check and the call

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
