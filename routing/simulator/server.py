"""Run a Simulator under uvicorn: in a background thread for tests and demos, or in the foreground."""

import uvicorn

from routing.loopback import HAS_UVLOOP, ThreadedServer

from .app import Simulator

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


class SimulatorServer(ThreadedServer):
    """A Simulator served on loopback from a background thread.

    Use as a context manager, or call start() and stop(). port=0 picks a free
    port; extra keyword arguments build the Simulator when none is given.
    """

    name = "simulator"

    def __init__(self, simulator=None, host="127.0.0.1", port=0, **simulator_options):
        self.simulator = simulator if simulator is not None else Simulator(**simulator_options)
        super().__init__(self.simulator, host=host, port=port, options=UVICORN_OPTIONS, graceful_s=1)

    def _while_stopping(self):
        # Held requests (silence, stall) are woken and their connections dropped; repeated
        # because a request can arrive and start waiting until uvicorn closes its listener.
        self.call_in_loop(self.simulator.release)
