"""Background work rides out outages by itself: a real Celery worker through a stop of its Redis broker, and
celery beat through a database outage (and a start while the database is down), with no restart by hand.

The broker is a redis-server of the test's own (tests/services.py) so the test may stop it; the database is
a throwaway one on the PostgreSQL server, reached through a relay (tests/sockets.py) that the test takes down,
as a stopped server would be, without stopping the server other tests share. Under CI=true a missing
PostgreSQL, Redis or redis-server fails these tests instead of skipping them.
"""

import os
import subprocess
import sys
import time
import uuid

import pytest
import redis
from celery import Celery

from tests.probes.test_celery import KEY, ROOT, Processes, simulator, wait_for  # noqa: F401
from tests.services import POSTGRES_PORT, RedisServer, throwaway_database, via_port
from tests.sockets import Relay

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.scaled, pytest.mark.timeout(120)]

OUTAGE_S = 10


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """Return (env for subprocesses without a broker, database URL): a migrated throwaway database."""
    with throwaway_database("wv_outage") as url:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "dashboard.settings", "DATABASE_URL": url,
            "WEATHERVANE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
            "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS": "true", "WEATHERVANE_PROBES_IN_PROCESS": "false",
            "WEATHERVANE_PROBE_DISPATCH_EVERY": "1", "WEATHERVANE_CELERY_QUEUE": f"wv-outage-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": str(ROOT),
        })
        env.setdefault("WEATHERVANE_FERNET_KEYS", _fernet_key())
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
        yield env, url


def _fernet_key():
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def rows(env, sql, params=()):
    import psycopg

    with psycopg.connect(env["DATABASE_URL"]) as conn:
        return conn.execute(sql, params).fetchall()


TARGET_SCRIPT = """
import sys, uuid, django
django.setup()
from probes.models import ProbeTarget
from routing.models import ApiKey, Deployment, Provider
suffix = uuid.uuid4().hex[:6]
provider = Provider.objects.create(name=f"sim-{suffix}", base_url=sys.argv[1])
key = ApiKey(provider=provider, label="main"); key.set_secret(sys.argv[2]); key.save()
deployment = Deployment.objects.create(name=f"{sys.argv[3]}-{suffix}", provider=provider, upstream_model=sys.argv[3])
ProbeTarget.objects.filter(deployment=deployment).update(interval_s=3600, enabled=False)
print(ProbeTarget.objects.get(deployment=deployment).pk)
"""


def create_target(env, base_url, model="quick"):
    """Create a deployment of the simulator's `model`, its probes paused; return its probe target's id."""
    out = subprocess.run([sys.executable, "-c", TARGET_SCRIPT, base_url, KEY, model], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split()[-1])


def send_probe(broker_url, queue, target_id):
    """Send run_probe for a fresh slot (retrying the publish while the broker is coming back); return the slot."""
    slot = int(time.time() * 1000)
    app = Celery(broker=broker_url, set_as_current=False)  # the tasks' own app stays the current one
    app.send_task("probes.tasks.run_probe", args=[target_id, slot], queue=queue,
                  retry=True, retry_policy={"max_retries": 20, "interval_start": 0.5, "interval_step": 0.5})
    app.close()
    return slot


def test_a_worker_rides_out_a_stop_of_its_redis_broker_and_runs_a_task_sent_after(database, simulator,  # noqa: F811
                                                                                 tmp_path):
    env, _ = database
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    target = create_target(env, simulator.base_url)
    result = "SELECT outcome FROM probes_proberesult WHERE target_id = %s AND slot = %s"
    with RedisServer(tmp_path) as broker:
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url}, tmp_path)
        # As the README runs it (threads, gossip, mingle and heartbeats on), on this test's queue.
        worker = processes.start("worker", "worker", "-P", "threads", "-c", "4", "-Q", queue, "--hostname=w@%h")
        log = tmp_path / "worker.log"
        try:
            before = send_probe(broker.url, queue, target)
            assert wait_for(lambda: rows(env, result, (target, before)), timeout=30), log.read_text()[-3000:]

            broker.stop()
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, log.read_text()[-3000:]
            broker.start()  # empty: the task is sent after Redis is back, nothing was queued before

            after = send_probe(broker.url, queue, target)
            assert wait_for(lambda: rows(env, result, (target, after)), timeout=40), log.read_text()[-3000:]
            assert rows(env, result, (target, after)) == [("ok",)]
            assert worker.poll() is None
        finally:
            processes.stop_all()


def test_a_worker_with_a_task_under_way_rides_out_a_stop_of_its_broker(database, simulator,  # noqa: F811
                                                                        tmp_path):
    """Closing the lost connection made kombu put the task under way back on the queue through it: the worker
    exited ("Unrecoverable error"). dashboard/broker.py keeps it alive; the task finishes and is recorded."""
    env, _ = database
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    slow = create_target(env, simulator.base_url, "slow")  # answers after about 2.5 s
    quick = create_target(env, simulator.base_url)
    result = "SELECT outcome FROM probes_proberesult WHERE target_id = %s AND slot = %s"
    with RedisServer(tmp_path) as broker:
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url}, tmp_path)
        worker = processes.start("worker", "worker", "-P", "threads", "-c", "4", "-Q", queue, "--hostname=w@%h")
        log = tmp_path / "worker.log"
        try:
            under_way = send_probe(broker.url, queue, slow)
            assert wait_for(lambda: simulator.simulator.attempts("slow"), timeout=30), log.read_text()[-3000:]
            broker.stop()  # while the probe waits for its answer
            time.sleep(OUTAGE_S)
            assert worker.poll() is None, log.read_text()[-3000:]
            assert rows(env, result, (slow, under_way)) == [("ok",)]  # finished and recorded meanwhile
            broker.start()
            after = send_probe(broker.url, queue, quick)
            assert wait_for(lambda: rows(env, result, (quick, after)), timeout=40), log.read_text()[-3000:]
            assert worker.poll() is None
        finally:
            processes.stop_all()
    assert "Unrecoverable error" not in log.read_text()


def start_beat(processes, name):
    return processes.start(name, "beat", "--pidfile", str(processes.tmp_path / f"{name}.pid"))  # the README's beat


def sent(client, queue):
    """Messages beat has queued so far (no worker consumes them here)."""
    return client.llen(queue)


def beat_lines(path, text):
    return [line for line in path.read_text().splitlines() if text in line]


def test_beat_keeps_scheduling_through_a_database_outage_and_logs_it_once(database, tmp_path):
    env, _ = database
    subprocess.run([sys.executable, "manage.py", "setup_probe_schedule"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    with RedisServer(tmp_path) as broker, Relay(("127.0.0.1", POSTGRES_PORT)) as relay:
        relayed = via_port(env["DATABASE_URL"], relay.port)
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url, "DATABASE_URL": relayed}, tmp_path)
        client = redis.Redis.from_url(broker.url)
        beat = start_beat(processes, "beat")
        log = tmp_path / "beat.log"
        try:
            assert wait_for(lambda: sent(client, queue) >= 2, timeout=30), log.read_text()[-3000:]
            relay.down()
            at_outage = sent(client, queue)
            time.sleep(OUTAGE_S)
            assert beat.poll() is None, log.read_text()[-3000:]
            # beat sent its entries from memory meanwhile: the one-second dispatch about once a second
            assert sent(client, queue) >= at_outage + OUTAGE_S // 2, log.read_text()[-3000:]
            relay.up()
            at_return = sent(client, queue)
            assert wait_for(lambda: beat_lines(log, "answers celery beat's schedule again"), timeout=15), \
                log.read_text()[-3000:]
            assert wait_for(lambda: sent(client, queue) >= at_return + 3, timeout=15)
            assert beat.poll() is None
        finally:
            processes.stop_all()
    assert len(beat_lines(log, "The database is unavailable to celery beat's schedule")) == 1, log.read_text()
    assert len(beat_lines(log, "answers celery beat's schedule again")) == 1
    assert "Traceback" not in log.read_text()


def test_beat_started_while_the_database_is_down_starts_scheduling_once_it_answers(database, tmp_path):
    env, _ = database
    subprocess.run([sys.executable, "manage.py", "setup_probe_schedule"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    with RedisServer(tmp_path) as broker, Relay(("127.0.0.1", POSTGRES_PORT)) as relay:
        relay.down()
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url, "WEATHERVANE_DB_WAIT": "1",
                               "DATABASE_URL": via_port(env["DATABASE_URL"], relay.port)}, tmp_path)
        client = redis.Redis.from_url(broker.url)
        beat = start_beat(processes, "beat")
        log = tmp_path / "beat.log"
        try:
            time.sleep(6)
            assert beat.poll() is None, log.read_text()[-3000:]
            assert sent(client, queue) == 0  # nothing read, nothing sent
            relay.up()
            assert wait_for(lambda: sent(client, queue) >= 2, timeout=20), log.read_text()[-3000:]
            assert beat.poll() is None
        finally:
            processes.stop_all()
    assert len(beat_lines(log, "The database is unavailable to celery beat's schedule")) == 1, log.read_text()
    assert "Traceback" not in log.read_text()


def test_beat_rides_out_a_stop_of_its_broker_and_logs_it_once(database, tmp_path):
    env, _ = database
    subprocess.run([sys.executable, "manage.py", "setup_probe_schedule"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    with RedisServer(tmp_path) as broker:
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url}, tmp_path)
        beat = start_beat(processes, "beat")
        log = tmp_path / "beat.log"
        try:
            assert wait_for(lambda: sent(redis.Redis.from_url(broker.url), queue) >= 2, timeout=30), \
                log.read_text()[-3000:]
            broker.stop()
            time.sleep(OUTAGE_S)
            assert beat.poll() is None, log.read_text()[-3000:]
            broker.start()  # empty again (no persistence): count what beat sends from now on
            assert wait_for(lambda: sent(redis.Redis.from_url(broker.url), queue) >= 3, timeout=20), \
                log.read_text()[-3000:]
            assert beat.poll() is None
        finally:
            processes.stop_all()
    assert len(beat_lines(log, "The broker is unavailable to celery beat")) == 1, log.read_text()[-3000:]
    assert len(beat_lines(log, "The broker answers celery beat again")) == 1, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_a_worker_rides_out_a_database_outage_and_logs_it_once(database, simulator, tmp_path):  # noqa: F811
    env, _ = database
    queue = env["WEATHERVANE_CELERY_QUEUE"]
    target = create_target(env, simulator.base_url)
    result = "SELECT outcome FROM probes_proberesult WHERE target_id = %s AND slot = %s"
    with RedisServer(tmp_path) as broker, Relay(("127.0.0.1", POSTGRES_PORT)) as relay:
        processes = Processes({**env, "CELERY_BROKER_URL": broker.url,
                               "DATABASE_URL": via_port(env["DATABASE_URL"], relay.port)}, tmp_path)
        worker = processes.start("worker", "worker", "-P", "threads", "-c", "4", "-Q", queue, "--hostname=w@%h")
        log = tmp_path / "worker.log"
        try:
            before = send_probe(broker.url, queue, target)
            assert wait_for(lambda: rows(env, result, (target, before)), timeout=30), log.read_text()[-3000:]
            relay.down()
            app = Celery(broker=broker.url, set_as_current=False)
            for _ in range(OUTAGE_S):  # the ticks beat would send meanwhile, one a second
                app.send_task("probes.tasks.dispatch_due_probes", queue=queue)
                time.sleep(1)
            app.close()
            assert worker.poll() is None, log.read_text()[-3000:]
            relay.up()
            after = send_probe(broker.url, queue, target)
            assert wait_for(lambda: rows(env, result, (target, after)), timeout=40), log.read_text()[-3000:]
        finally:
            processes.stop_all()
    text = log.read_text()
    assert len([line for line in text.splitlines() if "unavailable to the Celery worker's tasks" in line]) == 1, text
    assert len([line for line in text.splitlines() if "answers the Celery worker's tasks again" in line]) == 1, text
    assert "Traceback" not in text


QUEUED_FROM_DJANGO = """
import django
django.setup()
from dashboard.alerts.tasks import deliver_notification, tick_alerts
from probes.tasks import run_probe
for task in (tick_alerts, deliver_notification, run_probe):
    print(task.app.main, task.app.conf.broker_url, task.app.connection_for_write().transport_cls)
"""


def test_tasks_queued_by_any_django_process_go_through_the_configured_broker(tmp_path):
    """The control plane queues alert deliveries and ticks: through Celery's default app they went to an AMQP
    broker on localhost that does not exist."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env |= {"DJANGO_SETTINGS_MODULE": "dashboard.settings", "REDIS_URL": "redis://127.0.0.1:6379/14",
            "WEATHERVANE_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", QUEUED_FROM_DJANGO], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["weathervane redis://127.0.0.1:6379/14 redis"] * 3
