"""The README's "Scaled deployment" section can be followed to the end: its commands are the ones the one-machine
recipe (docs/scaled/Procfile, `make scaled-trial`) and the systemd units run, its environment block is complete,
`check --deploy` says what it claims, and the recipe brings the whole stack up."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import IN_CI
from tests.services import RedisServer, free_port, throwaway_database

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "docs" / "scaled"
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Scaled deployment"):README.index("## Security\n")]
BLOCK = re.search(r"```bash\n(.*?)```", SECTION, re.S).group(1)


def exports(text=BLOCK):
    """{name: value} of the block's `export` lines (comments dropped)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line.split(" #")[0])[1:]:
                name, _, value = word.partition("=")
                found[name] = value
    return found


PROCESSES = ("python manage.py serve ", "python manage.py gateway ", "celery ")


def commands(text=BLOCK):
    """The block's long-running process commands, without comments, host, port and worker counts (which a recipe
    may change)."""
    lines = (line.split("  #")[0].strip() for line in text.splitlines())
    return {_normalized(line) for line in lines if line.startswith(PROCESSES)}


def setup_steps(text=BLOCK):
    """The block's one-off `manage.py` commands, in order."""
    lines = (line.split("  #")[0].strip() for line in text.splitlines())
    steps = [step.strip() for line in lines if line.startswith("python manage.py") and not line.startswith(PROCESSES)
             for step in line.split("&&")]
    return [step.removeprefix("python manage.py ") for step in steps]


def _normalized(command):
    command = re.sub(r"^/opt/weathervane/\.venv/bin/", "", command)
    return re.sub(r"\s--(host|port|workers) \S+", "", command).strip()


def procfile():
    lines = (RECIPE / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))


def trial_env():
    lines = (RECIPE / "trial.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def units():
    return {path.stem: path.read_text() for path in sorted((RECIPE / "systemd").glob("*.service"))}


# --- the files agree with the README --------------------------------------------------------------------


def test_every_process_of_the_recipe_runs_the_readmes_command_for_it():
    processes = procfile()
    assert set(processes) == {"simulator", "control", "gateway", "worker", "beat"}
    documented = commands()
    for name, command in processes.items():
        if name != "simulator":  # the trial's stand-in provider
            assert _normalized(command) in documented, name
    assert {_normalized(c) for n, c in processes.items() if n != "simulator"} == documented


def test_the_environment_block_sets_everything_a_production_process_needs():
    names = set(exports())
    assert {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
            "WEATHERVANE_BEHIND_PROXY", "WEATHERVANE_PUBLIC_URL", "WEATHERVANE_GATEWAY_URL",
            "WEATHERVANE_FERNET_KEYS", "WEATHERVANE_METRICS_TOKEN", "WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS"} <= names
    # The trial differs only where the README says it does (plain http, the simulator, ports, its data dir).
    differences = set(trial_env()) - names
    assert differences == {"WEATHERVANE_PLAIN_HTTP", "WEATHERVANE_DATA_DIR", "WEATHERVANE_SIMULATOR_PORT",
                           "TRIAL_CONTROL_PORT", "TRIAL_GATEWAY_PORT"}
    assert all(f"`{name}" in SECTION for name in differences - {"WEATHERVANE_DATA_DIR"})
    # The secrets left as "…" in the block are the ones the trial generates.
    placeholders = {name for name, value in exports().items() if value == "…"}
    generated = set(re.findall(r'print\(f"([A-Z_]+)=', (ROOT / "scripts" / "scaled-trial.sh").read_text()))
    assert placeholders == generated == {"SECRET_KEY", "WEATHERVANE_FERNET_KEYS", "WEATHERVANE_METRICS_TOKEN"}


def test_the_trial_prepares_the_database_as_the_readme_does():
    steps = setup_steps()
    assert steps == ["migrate", "collectstatic --noinput", "setup_probe_schedule", "createsuperuser",
                     "check --deploy"]
    script = (ROOT / "scripts" / "scaled-trial.sh").read_text()
    ran = re.findall(r"^python manage.py (\w+)", script, re.M)
    # The same steps; the trial's first user comes with the demo seeding, and it checks nothing it then ignores.
    assert ran == ["migrate", "collectstatic", "setup_probe_schedule", "seed_demo"]


def test_the_section_creates_the_first_user_and_names_the_one_command_recipe():
    assert "python manage.py createsuperuser" in BLOCK
    assert "make scaled-trial" in SECTION
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^scaled-trial: install\n\tbash scripts/scaled-trial.sh \$\(PY\)$", makefile, re.M)
    assert "docs/scaled/Procfile" in (ROOT / "scripts" / "scaled-trial.sh").read_text()
    assert re.search(r"^honcho==\S+", (ROOT / "requirements.txt").read_text(), re.M)


def test_every_unit_restarts_its_process_always_and_runs_the_readmes_command():
    found = units()
    assert set(found) == {f"weathervane-{name}" for name in ("control", "gateway", "worker", "beat")}
    documented = commands()
    for name, text in found.items():
        assert "\nRestart=always\n" in text and "\nStartLimitIntervalSec=0\n" in text, name
        assert "\nEnvironmentFile=/etc/weathervane/weathervane.env\n" in text, name
        exec_start = re.search(r"^ExecStart=(.+)$", text, re.M).group(1)
        assert _normalized(exec_start) in documented, name
        assert f"{name}" in SECTION or name.removeprefix("weathervane") in SECTION
    # The unit shown in the README is the worker's file, comments aside.
    shown = re.search(r"```ini\n(.*?)```", SECTION, re.S).group(1)
    worker = [line for line in found["weathervane-worker"].splitlines() if not line.startswith("#")]
    assert shown.splitlines() == worker


# --- check --deploy says what the README says ---------------------------------------------------------------


def _filled(values, database_url, tmp_path):
    """The README's values with its "…" secrets generated and the addresses of this machine's services."""
    import secrets

    from cryptography.fernet import Fernet

    generated = {"SECRET_KEY": secrets.token_urlsafe(50), "WEATHERVANE_FERNET_KEYS": Fernet.generate_key().decode(),
                 "WEATHERVANE_METRICS_TOKEN": secrets.token_urlsafe(32)}
    filled = {name: generated.get(name, value) if value == "…" else value for name, value in values.items()}
    return filled | {"DATABASE_URL": database_url, "REDIS_URL": "redis://127.0.0.1:6379/0",
                     "WEATHERVANE_DATA_DIR": str(tmp_path)}


def check_deploy(variables):
    """Return the check ids `manage.py check --deploy` reports with only `variables` set (and PATH)."""
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "dashboard.settings", **variables}
    out = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return set(re.findall(r"^\?: \(([\w.]+)\)", out.stdout + out.stderr, re.M))


@pytest.mark.postgres
@pytest.mark.scaled
def test_check_deploy_reports_what_the_readme_says(tmp_path):
    with throwaway_database("wv_recipe") as database_url:
        _check_deploy_reports_what_the_readme_says(database_url, tmp_path)


def _check_deploy_reports_what_the_readme_says(database_url, tmp_path):
    production = _filled(exports(), database_url, tmp_path)
    assert check_deploy(production) == set()  # "no issues when configured as above"

    documented = set(re.findall(r"`(security\.W\d+)`", SECTION))
    assert len(documented) == 4  # "lists four warnings"
    trial = {k: v for k, v in production.items() if k != "WEATHERVANE_BEHIND_PROXY"}
    trial |= {"WEATHERVANE_PLAIN_HTTP": "true", "ALLOWED_HOSTS": "127.0.0.1,localhost"}
    assert check_deploy(trial) == documented
    trial.pop("WEATHERVANE_PUBLIC_URL")
    assert check_deploy(trial) == documented | {"weathervane.W007"}


# --- the recipe, end to end ---------------------------------------------------------------------------------


def require_honcho():
    try:
        import honcho  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("honcho (requirements.txt) is not installed; CI=true requires it.")
        pytest.skip("honcho is not installed")


def wait_for(check, timeout, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(every)
    return None


def get(url, **options):
    return httpx.get(url, timeout=5, **options)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.scaled
@pytest.mark.timeout(300)
def test_make_scaled_trial_brings_the_whole_stack_up_and_ctrl_c_stops_it(tmp_path):
    require_honcho()
    control, gateway = free_port(), free_port()
    # The recipe creates the database itself.
    with throwaway_database("wv_recipe", create=False) as database_url, RedisServer(tmp_path) as redis:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "WEATHERVANE_"))}
        env |= {"DATABASE_URL": database_url, "REDIS_URL": redis.url, "WEATHERVANE_DATA_DIR": str(tmp_path / "data"),
                "TRIAL_CONTROL_PORT": str(control), "TRIAL_GATEWAY_PORT": str(gateway),
                "WEATHERVANE_SIMULATOR_PORT": str(free_port()), "WEATHERVANE_PROBE_INTERVAL": "5",
                "PROCFILE_RUNNER": f"{sys.executable} -m honcho start -f"}
        log = tmp_path / "trial.log"
        with open(log, "w") as out:
            trial = subprocess.Popen(["bash", "scripts/scaled-trial.sh", sys.executable], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _check_the_stack(control, gateway, log, database_url)
        finally:
            os.killpg(trial.pid, signal.SIGINT)  # Ctrl-C
            try:
                trial.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(trial.pid, signal.SIGKILL)
                raise
        assert not _alive(trial.pid), "a process of the trial outlived Ctrl-C"
    text = log.read_text()
    for process in ("simulator", "control", "gateway", "worker", "beat"):
        assert f"{process}.1 stopped" in text, process


def _check_the_stack(control, gateway, log, database_url):
    import psycopg

    ready = {"status": "ready"}
    assert wait_for(lambda: get(f"http://127.0.0.1:{control}/readyz").json() == ready, 150), log.read_text()[-4000:]
    assert wait_for(lambda: get(f"http://127.0.0.1:{gateway}/readyz").json() == ready, 90), log.read_text()[-4000:]
    key = re.search(r"gateway key:\s+(\S+)", log.read_text()).group(1)  # printed once by the seeding
    assert re.search(r"admin login:\s+admin / \S+", log.read_text())  # the first user
    answer = httpx.post(f"http://127.0.0.1:{gateway}/v1/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "gpt-demo", "messages": [{"role": "user", "content": "hello"}]})
    assert answer.status_code == 200, answer.text
    assert get(f"http://127.0.0.1:{control}/login/").status_code == 200  # plain http: no redirect to https

    def probes_ran():  # beat dispatched and the worker probed the simulated providers
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) FROM probes_proberesult WHERE outcome = 'ok'").fetchone()[0]

    assert wait_for(probes_ran, 60, every=1), log.read_text()[-4000:]


def _alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
