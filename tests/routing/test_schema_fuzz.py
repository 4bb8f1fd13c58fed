"""The API keeps the contract its served OpenAPI schema states.

Schemathesis (pinned in requirements.txt) fuzzes every operation of the schema
that drf-spectacular serves, with `--checks all` and a staff token, against a
real Daphne server on loopback with a database of its own (seeded with the
demo registry plus rows whose optional links are empty). Examples per
operation and the seed are fixed, so the run is bounded and repeatable; any
failure (an undocumented status, a schema-valid request refused, an invalid
one accepted, a response off its schema, a server error) fails the test.
Settings for the run: tests/routing/schemathesis.toml.

One worker: with two, hypothesis parses lambda sources in both threads at
once and CPython 3.11's ast.parse sometimes fails with "AST constructor
recursion depth mismatch" (a runtime error of the tool, not of the API).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10
SEED = 20261201

SEED_ROWS = """
from django.contrib.auth.models import User
from routing.models import ApiToken, Deployment, Event, EventKind, RequestLog
from routing.outcomes import Outcome as RequestOutcome
from probes.models import ProbeTarget
user = User.objects.create_superuser("fuzz", "fuzz@example.com", "not-used-fuzz-password")
Event.objects.create(kind=EventKind.HEALTH, message="no deployment, route or key")
Event.objects.create(kind=EventKind.HEALTH, message="on a deployment", deployment=Deployment.objects.first())
RequestLog.objects.create(request_id="req-1", outcome=RequestOutcome.REJECTED, status=401)
key = Deployment.objects.first().provider.keys.first()
ProbeTarget.objects.get_or_create(deployment=Deployment.objects.first(), api_key=key)
print(ApiToken.objects.create(user, name="schema fuzzing")[1])
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True,
                          **kwargs)


def wait_for(port, process, log_path, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daphne exited: {log_path.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("daphne did not start listening")


@pytest.fixture
def api_server(tmp_path):
    """Yield (base URL, staff token) of a Daphne server with a fresh, seeded database."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"WEATHERVANE_DATA_DIR": str(tmp_path), "WEATHERVANE_PROBES_IN_PROCESS": "false",
            "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS": "true", "DEBUG": "false", "SECURE_SSL_REDIRECT": "false"}
    run(["manage.py", "migrate", "--noinput", "-v0"], env)
    port = free_port()
    run(["manage.py", "seed_demo", "--simulator-url", "http://127.0.0.1:9/v1", "--server-url", f"http://127.0.0.1:{port}"],
        env)
    token = run(["manage.py", "shell", "-c", SEED_ROWS], env).stdout.strip().splitlines()[-1]
    log = (tmp_path / "daphne.log").open("w")  # a file, not a pipe: nobody reads it while the server runs
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(port, server, tmp_path / "daphne.log")
        yield f"http://127.0.0.1:{port}", token
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


@pytest.mark.timeout(400)
def test_the_served_schema_survives_fuzzing_with_every_check(api_server, tmp_path):
    base_url, token = api_server
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{base_url}/api/schema/",
        "--checks", "all", "--header", f"Authorization: Token {token}", "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED), "--workers", "1", "--no-color", "--report-dir", str(tmp_path / "report"),
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=380)
    (tmp_path / "schemathesis.txt").write_text(result.stdout)
    failures = result.stdout.split("= WARNINGS =")[0][-12000:]  # the failing cases with their curl lines
    summary = f"{failures}\n...\n{result.stdout[-1500:]}\n(whole output: {tmp_path / 'schemathesis.txt'})"
    assert result.returncode == 0, summary
    assert "Failures:" not in result.stdout, summary
