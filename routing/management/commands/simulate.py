import json

from django.core.management.base import BaseCommand, CommandError

from routing.simulator import PERSONALITIES, Simulator, personality_from, run


class Command(BaseCommand):
    help = "Run the OpenAI-compatible upstream simulator in the foreground (loopback by default)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--config", help='JSON file: {"model name": {personality fields, optional "base"}}')
        parser.add_argument("--keys", help="comma-separated API keys to accept (default: any non-empty key)")
        parser.add_argument("--seed", type=int, help="seed the random draws for repeatable runs")

    def handle(self, *args, host, port, config, keys, seed, **options):
        simulator = Simulator(models=read_config(config), keys=parse_keys(keys), seed=seed)
        custom = ", ".join(simulator.models) or "none"
        self.stdout.write(f"Simulator on http://{host}:{port}/v1")
        self.stdout.write(f"Custom models: {custom}. Built-in: {', '.join(PERSONALITIES)}.")
        run(simulator, host=host, port=port)


def read_config(path):
    """Return {model: Personality} from a JSON file ({} without a path).

    Raises CommandError when the file or any personality in it is unusable.
    """
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read --config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise CommandError("--config must hold a JSON object mapping model names to personalities")
    models = {}
    for name, value in raw.items():
        try:
            models[name] = personality_from(value)
        except ValueError as exc:
            raise CommandError(f"--config {path}, model {name!r}: {exc}") from exc
    return models


def parse_keys(value):
    """Return the set of accepted keys, or None (any key) when --keys was not given."""
    if value is None:
        return None
    keys = {key.strip() for key in value.split(",") if key.strip()}
    if not keys:
        raise CommandError("--keys must name at least one key")
    return keys
