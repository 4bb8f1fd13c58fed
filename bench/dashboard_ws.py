"""Dashboard live-path benchmark (issue 5).

Starts the embedded app (`manage.py serve`: Daphne, simulator, in-process
probes) on a throwaway data directory with extra simulated deployments,
connects N signed-in WebSocket clients to /ws/live/, and measures for each
probe result the time from its being recorded (the `recorded_at` the probe
runner publishes) to its arrival at every client. Checks that every client
received every update, and writes JSON to --out.

    .venv/bin/python bench/dashboard_ws.py --clients 100 --duration 60
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(env, extra_deployments, sim_port):
    """Migrate, seed the demo plus extra deployments; return a staff session cookie."""
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "seed_demo", "--simulator-url", f"http://127.0.0.1:{sim_port}/v1"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from routing.models import Deployment, Provider

    provider = Provider.objects.get(name="steady-cloud")
    for i in range(extra_deployments):
        Deployment.objects.get_or_create(name=f"bench-{i:03d}",
                                         defaults={"provider": provider, "upstream_model": "steady"})
    user = User.objects.get(username="admin")
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def wait_http(url, proc, timeout=60):
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.25)
    raise SystemExit(f"timeout waiting for {url}")


async def client_loop(n, url, headers, stop_at, seen, latencies, errors, frames):
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, headers=headers, heartbeat=20) as ws:
                while time.time() < stop_at:
                    try:
                        msg = await ws.receive(timeout=max(0.1, stop_at - time.time()))
                    except TimeoutError:
                        break
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            errors.append(f"client {n}: socket closed ({msg.type})")
                            return
                        continue
                    now = time.time()
                    frames[n] += 1
                    for m in json.loads(msg.data).get("messages", []):
                        if m["type"] != "probe.result":
                            continue
                        p = m["payload"]
                        seen[n].add((p["target"], p["at"]))
                        if p.get("recorded_at"):
                            latencies.append((now - datetime.fromisoformat(p["recorded_at"]).timestamp()) * 1000)
    except Exception as exc:  # counted, reported
        errors.append(f"client {n}: {exc!r}")


async def measure(port, cookie, clients, duration):
    url = f"ws://127.0.0.1:{port}/ws/live/"
    headers = {"Cookie": f"sessionid={cookie}", "Origin": f"http://127.0.0.1:{port}"}
    seen = [set() for _ in range(clients)]
    frames = [0] * clients
    latencies, errors = [], []
    stop_at = time.time() + duration
    loops = (client_loop(n, url, headers, stop_at, seen, latencies, errors, frames) for n in range(clients))
    await asyncio.gather(*loops)
    return seen, latencies, errors, frames


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--deployments", type=int, default=30, help="extra simulated deployments (more probe traffic)")
    ap.add_argument("--interval", type=int, default=5, help="probe interval, seconds")
    default_out = ROOT / "bench" / "results" / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    ap.add_argument("--out", default=str(default_out))
    args = ap.parse_args()

    data_dir = tempfile.mkdtemp(prefix="wv-bench-dash-")
    port, sim_port = free_port(), free_port()
    env = {**os.environ, "WEATHERVANE_DATA_DIR": data_dir, "WEATHERVANE_SIMULATOR_PORT": str(sim_port),
           "WEATHERVANE_PROBE_INTERVAL": str(args.interval), "DEBUG": "true", "WEATHERVANE_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    cookie = prepare(env, args.deployments, sim_port)
    server = subprocess.Popen([PY, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(Path(data_dir) / "serve.log", "w"),
                              start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/login/", server)
        seen, latencies, errors, frames = asyncio.run(measure(port, cookie, args.clients, args.duration))
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    union = set().union(*seen)
    missing = [len(union - s) for s in seen]
    result = {
        "clients": args.clients, "duration_s": args.duration, "probe_targets_extra": args.deployments,
        "probe_interval_s": args.interval, "updates_published": len(union),
        "deliveries": sum(len(s) for s in seen), "clients_missing_updates": sum(1 for m in missing if m),
        "max_missing": max(missing) if missing else 0, "errors": errors[:20], "error_count": len(errors),
        "frames_per_client_mean": statistics.mean(frames) if frames else 0,
        "latency_ms": {"p50": pct(latencies, 0.5), "p95": pct(latencies, 0.95), "p99": pct(latencies, 0.99),
                       "max": max(latencies) if latencies else None, "samples": len(latencies)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
