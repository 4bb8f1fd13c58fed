"""Run a Simulator under uvicorn: in a background thread for tests and demos, or in the foreground."""

import asyncio
import importlib.util
import socket
import threading
import time

import uvicorn

from .app import Simulator

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None

# Headers and access logs cost time per request that a benchmark upstream should not spend.
UVICORN_OPTIONS = {
    "http": "httptools",
    "lifespan": "on",
    "access_log": False,
    "server_header": False,
    "date_header": False,
}


def run(simulator, host="127.0.0.1", port=8001, log_level="info"):
    """Serve simulator on host:port in the foreground until interrupted."""
    loop = "uvloop" if HAS_UVLOOP else "asyncio"
    uvicorn.run(simulator, host=host, port=port, loop=loop, log_level=log_level, **UVICORN_OPTIONS)


def _new_loop():
    if HAS_UVLOOP:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class SimulatorServer:
    """A Simulator served on loopback from a background thread.

    Use as a context manager, or call start() and stop(). port=0 picks a free
    port; extra keyword arguments build the Simulator when none is given.
    """

    def __init__(self, simulator=None, host="127.0.0.1", port=0, **simulator_options):
        self.simulator = simulator if simulator is not None else Simulator(**simulator_options)
        self.host = host
        self.port = port
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
        config = uvicorn.Config(
            self.simulator, log_level="warning", log_config=None, timeout_graceful_shutdown=1, **UVICORN_OPTIONS
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"simulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not start on {self.url}")
            time.sleep(0.005)
        return self

    def _serve(self, sock):
        loop = _new_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            loop.close()
            sock.close()

    def stop(self, timeout=2.0):
        """Stop serving; held requests (silence, stall) are woken and their connections dropped.

        Returns once the server thread ended, or after timeout at the latest.
        """
        if self._thread is None:
            return
        self._server.should_exit = True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            # Repeat: a request can arrive and start waiting until uvicorn closes its listener.
            self._wake_held()
            self._thread.join(0.05)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(0.5)
        self._thread = None

    def _wake_held(self):
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.simulator.release)
            except RuntimeError:
                pass  # the loop closed between the check and the call

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()
