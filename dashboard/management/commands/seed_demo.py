"""Seed the embedded demo once: three simulated providers with distinct
personalities, a route split 90/10, a ready-to-start (draft) rollout of
tail-gpt onto it, the default alert rules with a catch-all notification policy
(no channel yet: add one in the admin), an admin and a gateway key.

The admin password and the gateway key are printed exactly once, when they
are created; running the command again changes nothing.
"""

import secrets

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction

from dashboard.alerts import defaults as alert_defaults
from dashboard.alerts.models import AlertRule, NotificationPolicy
from routing import audit
from routing.models import ApiKey, AuditAction, Deployment, GatewayKey, Provider, Route, RouteTarget
from routing.rollouts.models import Rollout

ACTOR = "command:seed_demo"
ROUTE = "gpt-demo"
# (provider, simulated personality, deployment name, $ in / out per 1M tokens)
PROVIDERS = [
    ("steady-cloud", "steady", "steady-gpt", "0.50", "1.50"),
    ("tail-ai", "heavy-tailed", "tail-gpt", "0.30", "1.20"),
    ("flaky-relay", "flaky", "flaky-gpt", "0.20", "0.80"),
]
SPLIT = {"steady-gpt": 90, "tail-gpt": 10, "flaky-gpt": 0}
# The draft rollout of tail-gpt: allowances loose enough to decide within minutes at demo traffic (proving
# +0.5 pp takes thousands of canary requests). tail-gpt's heavy tail is in the wait before its first byte, so
# the time-to-first-token guard is what catches it (a 48-token answer's end-to-end time hides it).
ROLLOUT_CANARY = "tail-gpt"
ROLLOUT_PLAN = [
    {"weight": 25, "min_dwell_s": 60, "min_requests": 100},
    {"weight": 50, "min_dwell_s": 60, "min_requests": 200},
    {"pause": True},
    {"weight": 100, "min_dwell_s": 60, "min_requests": 200},
]
ROLLOUT_GUARDS = [
    {"metric": "errors", "allowed": 0.02, "limit": None},
    {"metric": "ttft_p95", "allowed": 0.25, "limit": None},
]


class Command(BaseCommand):
    help = "Create the demo data (simulated providers, a route, an admin, a gateway key) if it is not there yet."

    def add_arguments(self, parser):
        parser.add_argument("--simulator-url", default=f"http://127.0.0.1:{settings.SIMULATOR_PORT}/v1")
        parser.add_argument("--server-url", default="http://127.0.0.1:8000",
                            help="Where `serve` will listen (for the hint)")
        parser.add_argument("--gateway-url", default=settings.GATEWAY_URL,
                            help="Where clients reach the gateway when it runs on its own, ending in /v1 "
                                 "(default: WEATHERVANE_GATEWAY_URL, else /v1 on the server URL)")

    def handle(self, *args, simulator_url, server_url, gateway_url, **options):
        if Route.objects.filter(name=ROUTE).exists():
            self.stdout.write("Demo data already present; nothing changed.")
            return
        with transaction.atomic():
            self._seed_registry(simulator_url)
            self._seed_alerts()
            password = self._seed_admin()
            gateway_secret = self._seed_gateway_key()
        self.stdout.write(self.style.SUCCESS("Demo seeded. These secrets are shown once; note them now:"))
        if password:
            self.stdout.write(f"  admin login:  admin / {password}")
        self.stdout.write(f"  gateway key:  {gateway_secret}")
        gateway_url = (gateway_url or f"{server_url.rstrip('/')}/v1").rstrip("/")
        self.stdout.write(f"  dashboard:    {server_url}")
        self.stdout.write(f"  gateway:      {gateway_url}  (the base URL for OpenAI clients)")
        self.stdout.write(f"  try it:       curl -H 'Authorization: Bearer {gateway_secret}' {gateway_url}/models")

    def _seed_registry(self, simulator_url):
        for name, personality, deployment, price_in, price_out in PROVIDERS:
            provider = Provider.objects.create(name=name, base_url=simulator_url, notes=f"Simulated: {personality}")
            self._created(provider)
            for label in ("primary", "secondary"):
                key = ApiKey(provider=provider, label=label)
                key.set_secret(f"sk-demo-{secrets.token_hex(12)}")
                key.save()
                self._created(key)
            dep = Deployment.objects.create(
                name=deployment, provider=provider, upstream_model=personality,
                display_name=f"{personality} (simulated)",
                input_price_per_mtok=price_in, output_price_per_mtok=price_out,
            )  # no context window typed: the probes read it from the simulator's GET /v1/models
            self._created(dep)
        route = Route.objects.create(name=ROUTE, description="Demo route: steady baseline with a heavy-tailed canary")
        for deployment, weight in SPLIT.items():
            RouteTarget.objects.create(route=route, deployment=Deployment.objects.get(name=deployment), weight=weight)
        self._created(route)
        rollout = Rollout.objects.create(route=route, canary=Deployment.objects.get(name=ROLLOUT_CANARY),
                                         plan=ROLLOUT_PLAN, guards=ROLLOUT_GUARDS, step_timeout_s=900,
                                         created_by=ACTOR)
        self._created(rollout)

    def _seed_alerts(self):
        for rule in alert_defaults.RULES:
            if not AlertRule.objects.filter(name=rule["name"]).exists():
                self._created(AlertRule.objects.create(**rule))
        if not NotificationPolicy.objects.filter(name=alert_defaults.POLICY["name"]).exists():
            self._created(NotificationPolicy.objects.create(**alert_defaults.POLICY))

    def _seed_admin(self):
        Group.objects.get_or_create(name=settings.VIEWER_GROUP)
        if User.objects.filter(username="admin").exists():
            return None
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser("admin", "admin@localhost", password)
        audit.record(action=AuditAction.CREATE, object_type="user", object_id=str(user.pk), object_repr="admin",
                     actor=ACTOR, after={"username": "admin", "is_staff": True})
        return password

    def _seed_gateway_key(self):
        key = GatewayKey(name="demo app")
        secret = key.generate()
        key.save()
        self._created(key)
        return secret

    def _created(self, obj):
        audit.record(action=AuditAction.CREATE, obj=obj, actor=ACTOR, after=audit.snapshot(obj), reason="demo seed")
