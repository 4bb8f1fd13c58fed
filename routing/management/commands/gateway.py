from django.core.management.base import BaseCommand

from routing.gateway.serve import run


class Command(BaseCommand):
    help = "Run the gateway's OpenAI-compatible /v1 endpoints alone on uvicorn (uvloop, httptools, no access log)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8080)
        parser.add_argument("--workers", type=int, default=1, help="worker processes (each keeps its own snapshot)")
        parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])

    def handle(self, *args, host, port, workers, log_level, **options):
        self.stdout.write(f"Gateway on http://{host}:{port}/v1 with {workers} worker(s); metrics at /metrics")
        run(host=host, port=port, workers=max(1, workers), log_level=log_level)
