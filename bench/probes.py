"""Probe scheduling benchmark.

1. Scaled: celery beat + ONE Celery worker probe N targets (default 200) every
   10 s against a simulator model answering in 50 ms. Pass: every slot probed
   once and scheduling lag (start minus due time) p99 < 250 ms.
2. Embedded: the in-process scheduler probes M targets (default 100) the same
   way. Pass: every slot probed, lag p99 < 250 ms.

Needs Redis on 127.0.0.1:6379 (the broker). Uses a throwaway database: a
SQLite file, or a fresh database on the server of DATABASE_URL. Writes
bench/results/probes-<time>.json and prints a markdown table.

    .venv/bin/python bench/probes.py [--targets 200] [--embedded-targets 100] [--duration 60]
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL = "bench-50ms"
LAG_P99_LIMIT_MS = 250
SIMULATOR = f"""
import sys
from routing.simulator import Personality, Simulator, run
run(Simulator(models={{"{MODEL}": Personality(latency_median_ms=50)}}), port=int(sys.argv[1]), log_level="warning")
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200, help="targets for the Celery worker")
    parser.add_argument("--embedded-targets", type=int, default=100, help="targets for the embedded scheduler")
    parser.add_argument("--interval", type=int, default=10, help="seconds between probes of one target")
    parser.add_argument("--duration", type=int, default=60, help="measured seconds per phase")
    parser.add_argument("--warmup", type=int, default=12, help="seconds before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="threads of the one Celery worker")
    parser.add_argument("--broker", default=os.environ.get("WEATHERVANE_BENCH_BROKER", "redis://127.0.0.1:6379/12"))
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database and logs for a closer look")
    return parser.parse_args()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_environment(args, data_dir):
    """Point this process (and the Celery subprocesses) at a fresh database and a private queue."""
    env = {
        "WEATHERVANE_DATA_DIR": str(data_dir), "CELERY_BROKER_URL": args.broker,
        "WEATHERVANE_CELERY_QUEUE": f"wv-bench-{uuid.uuid4().hex[:8]}", "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "WEATHERVANE_PROBES_IN_PROCESS": "false", "WEATHERVANE_PROBE_DISPATCH_EVERY": "2",
        "WEATHERVANE_LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "dashboard.settings",
    }
    server = os.environ.get("DATABASE_URL", "")
    database = None
    if server:
        database = f"wv_bench_{uuid.uuid4().hex[:8]}"
        _postgres(server, f'CREATE DATABASE "{database}"')
        env["DATABASE_URL"] = urlunsplit(urlsplit(server)._replace(path=f"/{database}"))
        if not os.environ.get("WEATHERVANE_FERNET_KEYS"):  # required with DATABASE_URL; a throwaway one will do
            from cryptography.fernet import Fernet

            env["WEATHERVANE_FERNET_KEYS"] = Fernet.generate_key().decode()
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    return server, database


def _postgres(server, statement):
    import psycopg

    with psycopg.connect(urlunsplit(urlsplit(server)._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(statement)


def _drop_queue(broker, queue):
    import redis

    client = redis.Redis.from_url(broker)
    for key in client.scan_iter(f"*{queue}*"):  # the queue and kombu's bindings of it
        client.delete(key)
    client.close()


def setup_django():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)
    call_command("setup_probe_schedule", stdout=open(os.devnull, "w"))


def create_targets(base_url, count, interval):
    """Create `count` deployments of the bench model; return their probe target ids, all paused."""
    from probes.models import ProbeTarget
    from routing.models import ApiKey, Deployment, Provider

    provider = Provider.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}", base_url=base_url)
    key = ApiKey(provider=provider, label="bench")
    key.set_secret("sk-bench-key-0000")
    key.save()
    ids = []
    for i in range(count):
        deployment = Deployment.objects.create(name=f"{provider.name}-{i:03d}", provider=provider, upstream_model=MODEL)
        ids.append(ProbeTarget.objects.get(deployment=deployment).pk)
    ProbeTarget.objects.filter(pk__in=ids).update(interval_s=interval, timeout_s=5, enabled=False)
    return ids


def measure_window(target_ids, since, until, interval):
    """Return the figures of the probes due in [since, until) for these targets."""
    from probes.models import ProbeResult

    since_ms, until_ms = since.timestamp() * 1000, until.timestamp() * 1000
    rows = list(ProbeResult.objects.filter(target_id__in=target_ids, slot__gte=since_ms, slot__lt=until_ms)
                .values_list("lag_ms", "outcome", "total_ms"))
    expected = round(len(target_ids) * (until_ms - since_ms) / 1000 / interval)
    lags = sorted(lag for lag, _, _ in rows)
    outcomes = {}
    for _, outcome, _ in rows:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return {
        "targets": len(target_ids), "interval_s": interval, "window_s": round((until_ms - since_ms) / 1000),
        "probes_expected": expected, "probes_done": len(rows), "outcomes": outcomes,
        "lag_p50_ms": _quantile(lags, 0.5), "lag_p95_ms": _quantile(lags, 0.95), "lag_p99_ms": _quantile(lags, 0.99),
        "lag_max_ms": round(lags[-1], 1) if lags else None,
        "probe_total_p50_ms": round(statistics.median([t for _, _, t in rows if t]), 1) if rows else None,
    }


def _quantile(ordered, q):
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run_phase(target_ids, args, start, stop):
    """Enable the targets, start the probing (start()), wait out warm-up and window, stop(); return figures."""
    from probes.models import ProbeTarget

    ProbeTarget.objects.filter(pk__in=target_ids).update(enabled=True, dispatched_slot=None)
    start()
    since = datetime.now(UTC) + timedelta(seconds=args.warmup)
    until = since + timedelta(seconds=args.duration)
    time.sleep(args.warmup + args.duration + 6)  # +6: the last due probes finish
    stop()
    ProbeTarget.objects.filter(pk__in=target_ids).update(enabled=False)
    return measure_window(target_ids, since, until, args.interval)


def celery_phase(target_ids, args, log_dir):
    processes = []

    def start():
        for name, extra in (("beat", ["beat", "--pidfile", str(log_dir / "beat.pid")]),
                            ("worker", ["worker", "--pool=threads", f"--concurrency={args.concurrency}",
                                        "-Q", os.environ["WEATHERVANE_CELERY_QUEUE"], "--without-gossip",
                                        "--without-mingle", "--without-heartbeat"])):
            log = open(log_dir / f"{name}.log", "w")
            command = [sys.executable, "-m", "celery", "-A", "dashboard", *extra, "--loglevel=WARNING"]
            processes.append(subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    def stop():
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    figures = run_phase(target_ids, args, start, stop)
    figures.update(mode="celery (1 worker, threads pool)", concurrency=args.concurrency, load_avg_1m=os.getloadavg()[0])
    return figures


def embedded_phase(target_ids, args):
    from django.conf import settings

    from probes.scheduler import Scheduler

    scheduler = Scheduler()
    figures = run_phase(target_ids, args, scheduler.start, scheduler.stop)
    figures.update(mode="embedded scheduler", concurrency=settings.PROBE_THREADS, load_avg_1m=os.getloadavg()[0])
    return figures


def verdict(figures):
    complete = figures["probes_done"] >= figures["probes_expected"] * 0.98
    on_time = figures["lag_p99_ms"] is not None and figures["lag_p99_ms"] < LAG_P99_LIMIT_MS
    return "pass" if complete and on_time else "FAIL"


def table(phases):
    lines = [
        "| mode | targets | every | probes done / due | lag p50 | lag p95 | lag p99 | lag max | probe p50 | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in phases:
        lines.append(
            f"| {f['mode']} | {f['targets']} | {f['interval_s']} s | {f['probes_done']} / {f['probes_expected']} | "
            f"{f['lag_p50_ms']} ms | {f['lag_p95_ms']} ms | {f['lag_p99_ms']} ms | {f['lag_max_ms']} ms | "
            f"{f['probe_total_p50_ms']} ms | {f['verdict']} (p99 < {LAG_P99_LIMIT_MS} ms) |"
        )
    return "\n".join(lines)


def main():
    args = parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="wv-bench-probes-"))
    server, database = prepare_environment(args, data_dir)
    port = free_port()
    simulator = subprocess.Popen([sys.executable, "-c", SIMULATOR, str(port)], cwd=ROOT)
    try:
        setup_django()
        base_url = f"http://127.0.0.1:{port}/v1"
        phases = []
        if not args.skip_celery:
            phases.append(celery_phase(create_targets(base_url, args.targets, args.interval), args, data_dir))
        if not args.skip_embedded:
            phases.append(embedded_phase(create_targets(base_url, args.embedded_targets, args.interval), args))
    finally:
        _drop_queue(args.broker, os.environ["WEATHERVANE_CELERY_QUEUE"])
        simulator.terminate()
        simulator.wait(timeout=10)
        if database and not args.keep:
            from django.db import connections

            connections.close_all()
            _postgres(server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    for figures in phases:
        figures["verdict"] = verdict(figures)
    write(phases, args, database_kind="postgresql" if database else "sqlite")
    if args.keep:
        print(f"kept: {os.environ.get('DATABASE_URL') or data_dir}")
    return 0 if all(f["verdict"] == "pass" for f in phases) else 1


def write(phases, args, database_kind):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {"benchmark": "probes", "at": stamp, "database": database_kind, "broker": "redis",
              "cores": os.cpu_count(), "upstream_latency_ms": 50, "phases": phases, "args": vars(args)}
    path = RESULTS / f"probes-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\n### Probes ({database_kind}, {os.cpu_count()} cores, upstream 50 ms)\n")
    print(table(phases))
    print(f"\n(figures in {path.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
