"""The commands behind `make run`: seed_demo and serve."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from probes import windows
from routing.models import ApiKey, AuditEvent, Deployment, GatewayKey, Provider, Route, WindowSource, hash_gateway_key
from routing.simulator import Simulator, SimulatorServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_seed_demo_creates_the_demo_once_and_prints_its_secrets_once():
    out = StringIO()
    call_command("seed_demo", stdout=out)
    text = out.getvalue()
    assert Provider.objects.count() == 3 and ApiKey.objects.count() == 6
    assert Route.objects.get(name="gpt-demo").weights() == {"steady-gpt": 90, "tail-gpt": 10, "flaky-gpt": 0}
    password = text.split("admin / ")[1].split()[0]
    assert User.objects.get(username="admin").check_password(password)
    gateway_key = text.split("gateway key:")[1].split()[0]
    assert GatewayKey.objects.filter(key_hash=hash_gateway_key(gateway_key)).exists()
    assert AuditEvent.objects.filter(actor="command:seed_demo").count() >= 10

    again = StringIO()
    call_command("seed_demo", stdout=again)
    assert "nothing changed" in again.getvalue()
    assert password not in again.getvalue() and gateway_key not in again.getvalue()
    assert Provider.objects.count() == 3 and GatewayKey.objects.count() == 1


@pytest.mark.django_db
def test_the_demos_deployments_get_their_context_windows_from_the_simulator_with_none_typed(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = True
    with SimulatorServer(Simulator()) as simulator:
        call_command("seed_demo", stdout=StringIO(), simulator_url=simulator.base_url)
        assert set(Deployment.objects.values_list("context_window", flat=True)) == {None}
        windows.run_due()

    found = {d.name: d.window() for d in Deployment.objects.all()}
    assert {source for _, source in found.values()} == {WindowSource.PROVIDER}
    assert all(tokens > 0 for tokens, _ in found.values())


def _try_it(**options):
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue().split("try it:")[1].strip()


@pytest.mark.django_db
def test_the_demo_hint_points_at_the_gateway_on_its_own_port_when_it_runs_alone():
    hint = _try_it(server_url="http://127.0.0.1:8000", gateway_url="http://127.0.0.1:8080/v1/")
    assert hint.endswith(" http://127.0.0.1:8080/v1/models") and ":8000" not in hint


@pytest.mark.django_db
def test_the_demo_hint_takes_the_gateway_url_from_the_setting(settings):
    settings.GATEWAY_URL = "https://gateway.example.com/v1"
    assert _try_it().endswith(" https://gateway.example.com/v1/models")


@pytest.mark.django_db
def test_the_demo_hint_uses_the_embedded_gateway_when_there_is_no_other():
    assert _try_it(server_url="http://127.0.0.1:9000").endswith(" http://127.0.0.1:9000/v1/models")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_and_its_probes_move_within_ten_seconds(tmp_path):
    """What `make run` starts: one process serving pages, with the simulator and probes running."""
    port, sim_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path), "WEATHERVANE_SIMULATOR_PORT": str(sim_port), "DEBUG": "true"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
    server = subprocess.Popen([*manage, "serve", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        assert _wait_for(f"http://127.0.0.1:{port}/login/", 30) == 200
        results = 0
        while time.monotonic() - started < 10 and not results:
            time.sleep(0.5)
            with sqlite3.connect(tmp_path / "weathervane.sqlite3") as db:
                results = db.execute("SELECT count(*) FROM probes_proberesult").fetchone()[0]
        assert results, "no probe result within 10 s of starting serve"
    finally:
        server.terminate()
        server.wait(15)


def _wait_for(url, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return urllib.request.urlopen(url, timeout=2).status
        except OSError:
            time.sleep(0.25)
    return None


def test_a_clean_stop_of_serve_saves_the_last_requests_in_the_rollups(tmp_path):
    """Daphne sends no lifespan events: Ctrl-C must still flush what the gateway collected."""
    import signal

    import httpx

    port, sim_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path), "WEATHERVANE_SIMULATOR_PORT": str(sim_port), "DEBUG": "true",
            "WEATHERVANE_GATEWAY_FLUSH_INTERVAL": "600"}  # only the flush at stop can save them
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    seeded = subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True, timeout=60,
                            capture_output=True, text=True)
    key = seeded.stdout.split("gateway key:")[1].split()[0]
    server = subprocess.Popen([*manage, "serve", "--port", str(port), "--no-probes", "--no-demo-traffic"],
                              cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/login/", 30) == 200
        body = {"model": "gpt-demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        for _ in range(5):
            answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                                headers={"Authorization": f"Bearer {key}"}, timeout=20)
            assert answer.status_code == 200, answer.text
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    with sqlite3.connect(tmp_path / "weathervane.sqlite3") as db:
        counted = db.execute("SELECT coalesce(sum(count), 0) FROM probes_rollup WHERE source = 'traffic'").fetchone()[0]
    assert counted >= 5


def test_serve_sends_demo_traffic_through_the_gateway_on_the_demo_route(tmp_path):
    """The routes page has traffic from the first minute: gateway rollups for the demo route's targets appear."""
    port, sim_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path), "WEATHERVANE_SIMULATOR_PORT": str(sim_port), "DEBUG": "true",
            "WEATHERVANE_GATEWAY_FLUSH_INTERVAL": "0.5", "WEATHERVANE_DEMO_TRAFFIC_RPS": "5"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
    server = subprocess.Popen([*manage, "serve", "--port", str(port), "--no-probes"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(f"http://127.0.0.1:{port}/login/", 30) == 200
        deadline, traffic = time.monotonic() + 20, 0
        while time.monotonic() < deadline and traffic < 10:
            time.sleep(0.5)
            with sqlite3.connect(tmp_path / "weathervane.sqlite3") as db:
                query = "SELECT coalesce(sum(count), 0) FROM probes_rollup WHERE source = 'traffic'"
                traffic = db.execute(query).fetchone()[0]
        assert traffic >= 10, f"only {traffic} gateway requests recorded within 20 s of serve starting"
    finally:
        server.terminate()
        server.wait(15)
