"""Running a stored LoadTestRun: the same path for the CLI (in the foreground) and
for the API and dashboard (in a background thread).

The calling thread owns every database call; the run's event loop lives in a
thread of its own, so the generator never waits on the database. Every
PROGRESS_S the calling thread saves the progress, publishes it live, honours a
stop request, and hands the figures to `on_tick` (the CLI's progress bar).
A route is tested through the gateway with a key made for the run (limited to
that route, audited, disabled when the run ends, or by `close_abandoned` when
the process running it died) unless the caller brings its own.

Where the gateway is comes from configuration only (`gateway_url`), never from
a request: a caller's Host header would aim the run, and its key, at any port.
"""

import asyncio
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings as django_settings
from django.db import connections
from django.utils import timezone

from dashboard import live
from probes.loadtest import plans
from probes.loadtest.client import Sender
from probes.loadtest.models import ACTIVE, LoadTestRun
from probes.loadtest.runner import LoadTest, RunStatus
from routing import audit
from routing.models import AuditAction, Deployment, GatewayKey, Route
from routing.netguard import UpstreamBlocked, check_host

log = logging.getLogger(__name__)

PROGRESS_S = 0.5
ACTOR = "system:loadtest"
KEY_READY_TIMEOUT_S = 10.0


_served_gateway = {"url": ""}  # the /v1 of the address `serve` bound in this process


DEFAULT_CLI_GATEWAY = "http://127.0.0.1:8000/v1"
SERVED_FILE = "served-gateway"  # in the data directory: the /v1 of the address a running `serve` bound


def serve_gateway_at(host, port):
    """Note the address `manage.py serve` bound: runs started here reach the embedded gateway there, and so do
    `manage.py loadtest` runs on the same data directory (cli_gateway_url)."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    local = f"[{local}]" if ":" in local else local
    _served_gateway["url"] = f"http://{local}:{port}/v1"
    _served_file().write_text(_served_gateway["url"] + "\n", encoding="utf-8")
    return _served_gateway["url"]


def stop_serving_gateway():
    """Forget the served address (`serve` stopped): the CLI falls back to its default again."""
    _served_file().unlink(missing_ok=True)


def cli_gateway_url():
    """Return where `manage.py loadtest` sends route runs when not told: WEATHERVANE_GATEWAY_URL, else the gateway
    a running `serve` on this data directory bound (whatever its port), else DEFAULT_CLI_GATEWAY."""
    if django_settings.GATEWAY_URL:
        return django_settings.GATEWAY_URL
    try:
        served = _served_file().read_text(encoding="utf-8").strip()
    except OSError:
        served = ""
    return served if served.startswith("http://") else DEFAULT_CLI_GATEWAY


def _served_file():
    return Path(django_settings.DATA_DIR) / SERVED_FILE


def gateway_url():
    """Return the gateway's /v1 base for runs started from the API and pages, "" when none is known:
    WEATHERVANE_LOADTEST_GATEWAY_URL, else WEATHERVANE_GATEWAY_URL, else the address `serve` bound."""
    return django_settings.LOADTEST_GATEWAY_URL or django_settings.GATEWAY_URL or _served_gateway["url"]


class Job:
    """Runs one LoadTestRun to its end; `run()` blocks, `start()` runs it in a daemon thread."""

    def __init__(self, run, gateway_url="", gateway_secret="", on_tick=None):
        self.run_row = run
        self.gateway_url = gateway_url
        self.gateway_secret = gateway_secret
        self.on_tick = on_tick
        self.test = None
        self.loop = None

    def start(self):
        thread = threading.Thread(target=self._in_thread, name=f"loadtest-{self.run_row.pk}", daemon=True)
        thread.start()
        return thread

    def _in_thread(self):
        try:
            self.run()
        finally:
            _close_own_connections()

    def run(self):
        """Run to the end and return the saved LoadTestRun (status failed, with the reason, when it could not run)."""
        run = self.run_row
        self._save(status=RunStatus.RUNNING, started_at=timezone.now())
        try:
            with self._target() as target:
                result = self._drive(target)
        except (plans.NoKey, UpstreamBlocked, KeyNotReady, aiohttp.ClientError, OSError) as problem:
            self._save(status=RunStatus.FAILED, error=str(problem)[:500], finished_at=timezone.now())
            self._publish()
            return run
        self._save(status=result["status"], stop_reason=result["stop_reason"][:300], passed=result["passed"],
                   result=result, progress=self.test.progress(), finished_at=timezone.now())
        self._publish()
        return run

    @contextmanager
    def _target(self):
        settings = self.run_row.settings
        if settings.get("deployment"):
            target = plans.deployment_target(settings)
            check_host(urlsplit(target.url).hostname or "")
            yield target
        elif self.gateway_secret:
            yield plans.route_target(settings, self.gateway_url, self.gateway_secret)
        else:
            with run_key(Route.objects.get(name=settings["route"]), self.run_row) as secret:
                target = plans.route_target(settings, self.gateway_url, secret)
                asyncio.run(wait_for_key(self.gateway_url, secret))
                yield target

    def _drive(self, target):
        """Run the test on its own loop and thread; tick here until it ends; return its result."""
        settings = self.run_row.settings
        outcome = {}
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def main():
            async with Sender(target, settings["max_tokens"], settings["stream"], settings["timeout_s"]) as sender:
                self.test = LoadTest(plans.plan_for(settings), sender.send)
                ready.set()
                outcome["result"] = await self.test.execute()

        thread = threading.Thread(target=self.loop.run_until_complete, args=(main(),), name="loadtest-loop",
                                  daemon=True)
        thread.start()
        ready.wait(10)
        try:
            while thread.is_alive():
                thread.join(PROGRESS_S)
                self._tick()
        except KeyboardInterrupt:
            self.stop_now("stopped by Ctrl-C")
            thread.join()
        self.loop.close()
        return outcome["result"]

    def stop_now(self, reason):
        if self.test is not None and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.test.stop, reason)

    def _tick(self):
        if self.test is None:
            return
        progress = self.test.progress()
        if LoadTestRun.objects.filter(pk=self.run_row.pk, stop_requested=True).exists():
            self.stop_now("stopped by the user")
        LoadTestRun.objects.filter(pk=self.run_row.pk).update(progress=progress)
        self.run_row.progress = progress
        self._publish()
        if self.on_tick is not None:
            self.on_tick(progress)

    def _save(self, **fields):
        for name, value in fields.items():
            setattr(self.run_row, name, value)
        self.run_row.save(update_fields=list(fields))

    def _publish(self):
        live.loadtest_progress(progress_payload(self.run_row))


def _close_own_connections():
    """Close this thread's database connections (not one it shares with others, as a test server's)."""
    for connection in connections.all(initialized_only=True):
        if not connection.allow_thread_sharing:
            connection.close()


def progress_payload(run):
    """The live message of a run (also what its page reads when it loads)."""
    return {"run": run.pk, "status": run.status, "status_label": RunStatus(run.status).label,
            "progress": run.progress or {}, "passed": run.passed, "at": timezone.now().isoformat()}


class KeyNotReady(Exception):
    """The gateway did not accept the run's key in time."""


@contextmanager
def run_key(route, run):
    """Yield the plaintext of a gateway key limited to `route`, made for `run` and disabled afterwards (both audited).

    Disabled, not deleted: the gateway's request log may still be writing rows that name it.
    """
    key = GatewayKey(name=f"load test #{run.pk}"[:100], all_routes=False)
    secret = key.generate()
    key.save()
    key.routes.set([route])
    LoadTestRun.objects.filter(pk=run.pk).update(gateway_key=key)  # found again if this process dies mid-run
    audit.record(action=AuditAction.CREATE, obj=key, actor=ACTOR, after=audit.snapshot(key), reason=f"{run} starts")
    try:
        yield secret
    finally:
        disable_key(key, f"{run} ended")


def disable_key(key, reason):
    """Disable a run's gateway key (audited); a key already disabled is left alone."""
    if not key.enabled:
        return
    before = audit.snapshot(key)
    key.enabled = False
    key.save(update_fields=["enabled"])
    audit.record(action=AuditAction.UPDATE, obj=key, actor=ACTOR, before=before, after=audit.snapshot(key),
                 reason=reason)


async def wait_for_key(gateway_url, secret, timeout_s=KEY_READY_TIMEOUT_S):
    """Return once the gateway answers /models to `secret` (config changes reach it within a second or so).

    Raises KeyNotReady after timeout_s.
    """
    deadline = time.monotonic() + timeout_s
    headers = {"authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(gateway_url.rstrip("/") + "/models", headers=headers) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise KeyNotReady(f"the gateway at {gateway_url} did not accept the run's key within {timeout_s:g} s")


ABANDONED_AFTER_S = 300  # past its time cap by this much, a run's process is gone (a restart mid-run)


def close_abandoned(now=None, restarted=False):
    """Mark runs still "running" long after their time cap (every one, when `restarted`: the one process that
    runs them started anew) as failed, and disable the key of every run that is over; return how many closed."""
    now = now or timezone.now()
    closed = 0
    for run in LoadTestRun.objects.filter(status__in=ACTIVE):
        cap = float(run.settings.get("duration_s") or 0) + ABANDONED_AFTER_S
        if restarted or (now - (run.started_at or run.created_at)).total_seconds() > cap:
            closed += LoadTestRun.objects.filter(pk=run.pk, status=run.status).update(
                status=RunStatus.FAILED, error="abandoned: the process running it stopped", finished_at=now)
    over = LoadTestRun.objects.exclude(status__in=ACTIVE).filter(gateway_key__enabled=True)
    for run in over.select_related("gateway_key"):
        disable_key(run.gateway_key, f"{run} is over (its process stopped)")
    return closed


def create_run(settings, user=None):
    """Return a new queued LoadTestRun for validated settings, with its estimated maximum spend."""
    route = Route.objects.filter(name=settings.get("route") or "").first()
    deployment = Deployment.objects.filter(name=settings.get("deployment") or "").first()
    return LoadTestRun.objects.create(
        created_by=user if user is not None and user.is_authenticated else None, route=route, deployment=deployment,
        target_label=plans.target_label(settings), settings=settings, estimated_max_cost=plans.max_spend(settings),
    )
