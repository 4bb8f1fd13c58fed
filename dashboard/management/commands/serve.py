"""The embedded mode in one process: Daphne serving the dashboard, the API,
the admin, WebSockets and the gateway at /v1/, with the built-in simulator
and the in-process probe scheduler running beside it, until Ctrl-C."""

import logging

from daphne.endpoints import build_endpoint_description_strings
from django.conf import settings
from django.core.management.base import BaseCommand

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve Weathervane (embedded mode) with the simulator and in-process probes."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-simulator", action="store_true", help="Do not start the built-in simulator")
        parser.add_argument("--no-probes", action="store_true", help="Do not run probes in this process")

    def handle(self, *args, host, port, no_simulator, no_probes, **options):
        simulator = None if no_simulator else self._start_simulator()
        scheduler = None if no_probes or not settings.PROBES_IN_PROCESS else self._start_probes()
        from dashboard.asgi import application
        from dashboard.server_limits import LimitedServer

        self.stdout.write(self.style.SUCCESS(f"Weathervane on http://{host}:{port}/  (API docs: /api/docs/, gateway: /v1/)"))
        try:
            LimitedServer(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                http_timeout=None,
                websocket_handshake_timeout=10,
                verbosity=0,
            ).run()
        finally:
            if scheduler is not None:
                scheduler.stop()
            if simulator is not None:
                simulator.stop()

    def _start_simulator(self):
        from routing.simulator import SimulatorServer

        server = SimulatorServer(port=settings.SIMULATOR_PORT).start()
        self.stdout.write(f"Simulator on {server.base_url}")
        return server

    def _start_probes(self):
        try:
            from probes import scheduler
        except ImportError:
            log.warning("probes scheduler not available; running without probes")
            return None
        scheduler.start()
        self.stdout.write("Probes running in-process")
        return scheduler
