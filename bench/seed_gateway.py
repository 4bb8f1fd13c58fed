"""Seed a throwaway Weathervane data dir for the gateway benchmark and print the gateway key.

Run with WEATHERVANE_DATA_DIR pointing at an empty directory (bench/gateway.sh does):
a provider at --upstream with key sk-mock, deployment and route "bench-model"
(weight 100), and a gateway key. Limits are on but high (so every request pays
for checking them without being refused): the gateway key and the provider key
get rpm/tpm limits far above what the run can reach.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from routing.models import ApiKey, Deployment, GatewayKey, Provider, Route, RouteTarget  # noqa: E402

HIGH = 100_000_000


def seed(upstream, model, limits=True):
    limit = HIGH if limits else None
    provider = Provider.objects.create(name="bench-upstream", base_url=upstream, read_timeout=30, connect_timeout=5)
    key = ApiKey(provider=provider, label="bench", rpm_limit=limit, tpm_limit=limit)
    key.set_secret("sk-mock")
    key.save()
    deployment = Deployment.objects.create(name="bench-deployment", provider=provider, upstream_model=model,
                                           input_price_per_mtok=1, output_price_per_mtok=2)
    route = Route.objects.create(name=model)
    RouteTarget.objects.create(route=route, deployment=deployment, weight=100)
    client = GatewayKey(name="bench", rpm_limit=limit)
    plaintext = client.generate()
    client.save()
    return plaintext


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", default="http://127.0.0.1:18000/v1")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--no-limits", action="store_true", help="leave every limit empty (to measure what they cost)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print(seed(args.upstream, args.model, limits=not args.no_limits))


if __name__ == "__main__":
    main()
