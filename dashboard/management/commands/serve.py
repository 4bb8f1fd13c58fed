"""The embedded mode in one process: Daphne serving the dashboard, the API,
the admin, WebSockets and the gateway at /v1/, with the built-in simulator
and the in-process probe scheduler running beside it, until Ctrl-C."""

from daphne.endpoints import build_endpoint_description_strings
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError


class Command(BaseCommand):
    help = "Serve Weathervane (embedded mode) with the simulator and in-process probes."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-simulator", action="store_true", help="Do not start the built-in simulator")
        parser.add_argument("--no-probes", action="store_true", help="Do not run probes in this process")
        parser.add_argument("--no-demo-traffic", action="store_true",
                            help="Do not send the gentle demo traffic through the gateway on the demo route")

    def handle(self, *args, host, port, no_simulator, no_probes, no_demo_traffic, **options):
        simulator = None if no_simulator else self._start_simulator()
        scheduler = None if no_probes or not settings.PROBES_IN_PROCESS else self._start_probes()
        traffic = None if no_demo_traffic else self._start_demo_traffic(host, port)
        self._load_tests_here(host, port)
        from dashboard.asgi import application, gateway
        from dashboard.server_limits import LimitedServer

        gateway_url = settings.GATEWAY_URL or "/v1/"
        self.stdout.write(self.style.SUCCESS(
            f"Weathervane on http://{host}:{port}/  (API docs: /api/docs/, gateway: {gateway_url})"))
        try:
            LimitedServer(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                http_timeout=None,
                websocket_handshake_timeout=10,
                verbosity=0,
            ).run()
        finally:
            self._load_tests_elsewhere()
            if traffic is not None:
                traffic.stop()
            gateway.close()  # the last rollups, request-log rows and key/circuit changes are saved
            if scheduler is not None:
                scheduler.stop()
            if simulator is not None:
                simulator.stop()

    def _start_simulator(self):
        from routing.simulator import SimulatorServer

        server = SimulatorServer(port=settings.SIMULATOR_PORT).start()
        self.stdout.write(f"Simulator on {server.base_url}")
        return server

    def _start_demo_traffic(self, host, port):
        from dashboard.management.commands.seed_demo import ROUTE
        from probes.loadtest.demo_traffic import DemoTraffic, demo_key
        from routing.models import Route

        if settings.DEMO_TRAFFIC_RPS <= 0:
            return None
        try:
            if not Route.objects.filter(name=ROUTE).exists():
                return None
        except DatabaseError:  # not migrated yet: serve anyway (the pages say what is missing), without demo traffic
            return None
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        rps = settings.DEMO_TRAFFIC_RPS
        traffic = DemoTraffic(f"http://{local}:{port}/v1", ROUTE, demo_key(ROUTE), rps=rps).start()
        self.stdout.write(f"Demo traffic: about {rps:g} requests/s on {ROUTE} (--no-demo-traffic: off)")
        return traffic

    def _load_tests_here(self, host, port):
        """Load tests started from the API or pages reach the gateway this server binds, and runs a previous
        process left behind are closed with their keys (this one process runs them all)."""
        from probes.loadtest import jobs

        jobs.serve_gateway_at(host, port)
        try:
            jobs.close_abandoned(restarted=True)
        except DatabaseError:  # not migrated yet: nothing to close
            pass

    def _start_probes(self):
        from probes import scheduler

        scheduler.start()
        self.stdout.write("Probes running in-process")
        return scheduler

    def _load_tests_elsewhere(self):
        from probes.loadtest import jobs

        jobs.stop_serving_gateway()
