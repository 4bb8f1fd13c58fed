"""Celery for real: a worker (and beat) in subprocesses, the Redis broker on 127.0.0.1:6379.

The worker needs a database the test can see too, so these tests make their
own: a SQLite file in a temporary data directory, or a fresh database on the
PostgreSQL server of DATABASE_URL (the scaled pass of `make test`). The test
reads it with plain SQL; the objects are created by a script run like the
worker, through the ORM. Each run uses its own queue on Redis DB 14.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from celery import Celery

from routing.simulator import Personality, Simulator, SimulatorServer
from tests.conftest import require_service

pytestmark = [pytest.mark.redis, pytest.mark.scaled, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("WEATHERVANE_TEST_CELERY_BROKER", "redis://127.0.0.1:6379/14")
KEY = "sk-celery-test-key-0001"

SETUP_SCRIPT = """
import json, sys, django
django.setup()
from django.core.management import call_command
from probes.models import ProbeTarget
from routing.models import ApiKey, Deployment, Provider
spec = json.loads(sys.argv[1])
call_command("setup_probe_schedule", stdout=open("/dev/null", "w"))
provider = Provider.objects.create(name=spec["provider"], base_url=spec["base_url"])
key = ApiKey(provider=provider, label="main"); key.set_secret(spec["key"]); key.save()
ids = {}
for name, fields in spec["targets"].items():
    deployment = Deployment.objects.create(name=name, provider=provider, upstream_model=name)
    ProbeTarget.objects.filter(deployment=deployment).update(**fields)
    ids[name] = ProbeTarget.objects.get(deployment=deployment).pk
print(json.dumps(ids))
"""


class Database:
    """The throwaway database the worker and the test share."""

    def __init__(self, tmp_path):
        self.server_url = os.environ.get("DATABASE_URL", "")
        self.name = f"wv_celery_{uuid.uuid4().hex[:8]}"
        self.sqlite_path = tmp_path / "weathervane.sqlite3"
        if self.server_url:
            self._admin(f'CREATE DATABASE "{self.name}"')

    @property
    def url(self):
        if not self.server_url:
            return ""
        parts = urlsplit(self.server_url)
        return urlunsplit(parts._replace(path=f"/{self.name}"))

    def _admin(self, statement):
        import psycopg

        parts = urlsplit(self.server_url)
        with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
            conn.execute(statement)

    def rows(self, sql, params=()):
        if self.server_url:
            import psycopg

            with psycopg.connect(self.url) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        with sqlite3.connect(self.sqlite_path, timeout=20) as conn:
            return conn.execute(sql, params).fetchall()

    def drop(self):
        if self.server_url:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture
def simulator():
    models = {"quick": Personality(latency_median_ms=20), "slow": Personality(latency_median_ms=2500)}
    with SimulatorServer(Simulator(models=models, keys={KEY})) as server:
        yield server


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Return (env for subprocesses, Database), migrated once for the module."""
    require_service("Redis", "127.0.0.1", 6379)
    tmp_path = tmp_path_factory.mktemp("celery")
    database = Database(tmp_path)
    queue = f"wv-test-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "dashboard.settings", "WEATHERVANE_DATA_DIR": str(tmp_path),
        "CELERY_BROKER_URL": BROKER, "WEATHERVANE_CELERY_QUEUE": queue, "WEATHERVANE_CELERY_VISIBILITY_TIMEOUT": "3",
        "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS": "true", "WEATHERVANE_PROBE_DISPATCH_EVERY": "1",
        "WEATHERVANE_PROBES_IN_PROCESS": "false", "PYTHONPATH": str(ROOT),
    })
    if database.url:
        env["DATABASE_URL"] = database.url
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)
    yield env, database
    _drop_queue(queue)
    database.drop()


def _drop_queue(queue):
    import redis

    client = redis.Redis.from_url(BROKER)
    for key in client.scan_iter(f"*{queue}*"):  # the queue and kombu's bindings of it
        client.delete(key)
    client.close()


def create_targets(env, base_url, targets):
    spec = json.dumps({"base_url": base_url, "key": KEY, "targets": targets, "provider": f"sim-{uuid.uuid4().hex[:6]}"})
    out = subprocess.run([sys.executable, "-c", SETUP_SCRIPT, spec], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


class Processes:
    def __init__(self, env, tmp_path):
        self.env, self.tmp_path, self.running = env, tmp_path, []

    def start(self, name, *args):
        log = open(self.tmp_path / f"{name}.log", "w")
        command = [sys.executable, "-m", "celery", "-A", "dashboard", *args, "--loglevel=WARNING"]
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(process)
        return process

    def worker(self, name, pool="threads"):
        return self.start(name, "worker", f"--pool={pool}", "--concurrency=4",
                          "-Q", self.env["WEATHERVANE_CELERY_QUEUE"],
                          "--without-gossip", "--without-mingle", "--without-heartbeat", f"--hostname={name}@%h")

    def stop_all(self):
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def processes(world, tmp_path):
    env, _ = world
    running = Processes(env, tmp_path)
    yield running
    running.stop_all()


def wait_for(check, timeout, every=0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    return check()


def test_beat_and_a_worker_run_scheduled_probes_once_per_slot(world, processes, simulator):
    env, database = world
    ids = create_targets(env, simulator.base_url, {"quick": {"interval_s": 5}})
    # The configured scheduler (dashboard.beat), as the README's `celery -A dashboard beat` runs it.
    processes.start("beat", "beat", "--pidfile", str(processes.tmp_path / "beat.pid"))
    processes.start("beat2", "beat", "--pidfile", str(processes.tmp_path / "beat2.pid"))  # must not double the probes
    processes.worker("w1")
    sql = "SELECT slot, outcome, lag_ms FROM probes_proberesult WHERE target_id = ? ORDER BY slot"
    rows = wait_for(lambda: len(database.rows(sql, (ids["quick"],))) >= 3 and database.rows(sql, (ids["quick"],)),
                    timeout=60)
    assert rows, (processes.tmp_path / "w1.log").read_text()[-3000:]
    slots = [slot for slot, _, _ in rows]
    assert len(set(slots)) == len(slots)
    # spread on the target's grid, none skipped
    assert all(b - a == 5000 for a, b in zip(slots, slots[1:], strict=False))
    assert {outcome for _, outcome, _ in rows} == {"ok"}
    # Each slot starts before the next one is due; how small the lag is, bench/probes.py measures (p99 < 250 ms).
    assert max(lag for _, _, lag in rows) < 5000
    processes.stop_all()  # a warm shutdown lets a probe under way finish
    # One upstream request per probe result; the worker's prefill check (probes.prefill, an assistant prefill)
    # is the only other request it sends the model.
    probes_sent = [a for a in simulator.simulator.attempts("quick") if a.prefill is None]
    assert len(probes_sent) == len(database.rows(sql, (ids["quick"],)))


def test_a_worker_killed_mid_probe_leaves_exactly_one_result_for_the_slot(world, processes, simulator):
    env, database = world
    ids = create_targets(env, simulator.base_url, {"slow": {"interval_s": 3600, "timeout_s": 4, "enabled": False}})
    victim = processes.worker("victim", pool="solo")
    slot = int(time.time() * 1000)
    app = Celery(broker=BROKER, set_as_current=False)  # the project's app stays the current one
    app.send_task("probes.tasks.run_probe", args=[ids["slow"], slot], queue=env["WEATHERVANE_CELERY_QUEUE"])
    victim_log = processes.tmp_path / "victim.log"
    assert wait_for(lambda: simulator.simulator.attempts("slow"), timeout=30), victim_log.read_text()
    victim.send_signal(signal.SIGKILL)  # mid-probe: the upstream is still answering
    victim.wait(timeout=10)
    simulator.simulator.configure("slow", latency_median_ms=10)
    processes.worker("rescuer")
    sql = "SELECT outcome FROM probes_proberesult WHERE target_id = ? AND slot = ?"
    rescuer_log = processes.tmp_path / "rescuer.log"
    assert wait_for(lambda: database.rows(sql, (ids["slow"], slot)), timeout=60), rescuer_log.read_text()[-3000:]
    time.sleep(3)  # any duplicate delivery would have landed by now
    assert database.rows(sql, (ids["slow"], slot)) == [("ok",)]
    assert len(simulator.simulator.attempts("slow")) == 2  # the killed attempt and the redelivered one
    slot_row = database.rows("SELECT attempts, done FROM probes_probeslot WHERE slot = ?", (slot,))
    assert slot_row in ([(2, 1)], [(2, True)])
