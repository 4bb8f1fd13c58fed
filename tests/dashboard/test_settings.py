"""Settings from the environment, the deploy checks, and where upstream URLs may point."""

import os
import secrets
import socket
import string
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError

from routing import netguard

BASE_DIR = Path(__file__).resolve().parents[2]
# Variables the settings read; stripped so the developer's own environment cannot leak in.
SETTINGS_PREFIXES = ("WEATHERVANE_", "DJANGO_")
SETTINGS_NAMES = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "CSRF_TRUSTED_ORIGINS",
                  "CELERY_BROKER_URL", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_PRELOAD"}


def settings_env(data_dir, **variables):
    """Return this process's environment with only `variables` (and the data directory) configured."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_NAMES and not k.startswith(SETTINGS_PREFIXES)}
    return env | {"WEATHERVANE_DATA_DIR": str(data_dir), **variables}


def manage(*args, data_dir, **variables):
    """Run manage.py with only `variables` configured; return the CompletedProcess."""
    env = settings_env(data_dir, **variables)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=60)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(data_dir, command, port, **variables):
    """Start `manage.py <command> --port <port>` with only `variables` configured; return the Popen."""
    env = settings_env(data_dir, **variables)
    return subprocess.Popen([sys.executable, "manage.py", *command, "--port", str(port)], cwd=BASE_DIR, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def stop(server):
    """Stop a `serving` process; return what it wrote to stderr."""
    server.terminate()
    return server.communicate(timeout=15)[1]


def get_when_up(url, timeout=30, **options):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5, **options)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def production(**overrides):
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return {
        "DEBUG": "false",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(50)),
        "ALLOWED_HOSTS": "example.com",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "WEATHERVANE_FERNET_KEYS": Fernet.generate_key().decode(),
        "WEATHERVANE_PUBLIC_URL": "https://example.com",
    } | overrides


def test_a_production_setup_passes_the_deploy_checks(tmp_path):
    result = manage("check", "--deploy", data_dir=tmp_path, **production())
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout, result.stdout + result.stderr


def test_production_without_redis_warns_about_the_in_memory_channel_layer(tmp_path):
    variables = production()
    del variables["REDIS_URL"]
    result = manage("check", "--deploy", data_dir=tmp_path, **variables)
    assert "weathervane.W001" in result.stdout + result.stderr


def test_production_without_a_public_url_warns_that_notifications_cannot_link_back(tmp_path):
    variables = production()
    del variables["WEATHERVANE_PUBLIC_URL"]
    result = manage("check", "--deploy", data_dir=tmp_path, **variables)
    assert "weathervane.W007" in result.stdout + result.stderr and "WEATHERVANE_PUBLIC_URL" in result.stderr


def test_production_with_request_bodies_logged_warns(tmp_path):
    result = manage("check", "--deploy", data_dir=tmp_path, **production(WEATHERVANE_GATEWAY_LOG_BODIES="true"))
    assert "weathervane.W006" in result.stdout + result.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("WEATHERVANE_PROBE_INTERVAL", "abc"),
    ("DEBUG", "maybe"),
    ("WEATHERVANE_API_USER_RATE", "lots"),
    ("DATABASE_URL", "ftp://admin:hunter2-db-password@db.example.com/weathervane"),
])
def test_a_malformed_variable_stops_the_start_naming_it_without_echoing_passwords(tmp_path, name, value):
    result = manage("check", data_dir=tmp_path, **{name: value})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{name} must be" in output
    assert "hunter2" not in output


def test_a_first_token_floor_above_its_ceiling_stops_the_start_naming_both(tmp_path):
    result = manage("check", data_dir=tmp_path, WEATHERVANE_GATEWAY_FIRST_TOKEN_FLOOR="60",
                    WEATHERVANE_GATEWAY_FIRST_TOKEN_CEILING="30")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WEATHERVANE_GATEWAY_FIRST_TOKEN_FLOOR must not exceed WEATHERVANE_GATEWAY_FIRST_TOKEN_CEILING" in output


# --- HTTPS with DEBUG=false -------------------------------------------------------------------

PASSWORD = "a-long-trial-password-4821"


def test_with_debug_off_plain_http_goes_to_https(tmp_path):
    port = free_port()
    server = serving(tmp_path, ["serve", "--no-simulator", "--no-probes"], port, DEBUG="false")
    try:
        answer = get_when_up(f"http://127.0.0.1:{port}/login/")
        assert answer.status_code == 301 and answer.headers["location"] == f"https://127.0.0.1:{port}/login/"
    finally:
        stop(server)


def test_a_local_trial_over_plain_http_can_log_in(tmp_path):
    assert manage("migrate", "-v0", data_dir=tmp_path).returncode == 0
    made = manage("createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com",
                  data_dir=tmp_path, DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    assert made.returncode == 0, made.stderr
    port = free_port()
    server = serving(tmp_path, ["serve", "--no-simulator", "--no-probes"], port, DEBUG="false",
                     WEATHERVANE_PLAIN_HTTP="true")
    try:
        base = f"http://127.0.0.1:{port}"
        assert get_when_up(f"{base}/login/").status_code == 200
        # keeps cookies as a browser does: no secure ones over http
        with httpx.Client(base_url=base, timeout=10) as browser:
            browser.get("/login/")
            fields = {"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
            signed_in = browser.post("/login/", data=fields)
            assert signed_in.status_code == 302 and signed_in.headers["location"] == "/"
            assert browser.get("/").status_code == 200
    finally:
        stop(server)


def test_behind_a_tls_proxy_its_forwarded_proto_is_trusted(tmp_path):
    port = free_port()
    server = serving(tmp_path, ["serve", "--no-simulator", "--no-probes"], port, DEBUG="false",
                     WEATHERVANE_BEHIND_PROXY="true")
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/login/", headers={"X-Forwarded-Proto": "https"}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/login/").status_code == 301
    finally:
        stop(server)


SAFE_DEFAULTS = ("DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
                 "SECURE_HSTS_PRELOAD", "ALLOW_PRIVATE_UPSTREAMS")


def effective_settings(data_dir, **variables):
    code = f"from django.conf import settings; print(*(repr(getattr(settings, n)) for n in {SAFE_DEFAULTS!r}))"
    result = manage("shell", "--no-imports", "-c", code, data_dir=data_dir, **variables)
    assert result.returncode == 0, result.stderr
    return dict(zip(SAFE_DEFAULTS, result.stdout.splitlines()[-1].split(), strict=True))


def test_a_deployment_that_sets_nothing_gets_production_safe_settings(tmp_path):
    assert effective_settings(tmp_path) == {
        "DEBUG": "False", "SESSION_COOKIE_SECURE": "True", "CSRF_COOKIE_SECURE": "True", "SECURE_SSL_REDIRECT": "True",
        "SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_PRELOAD": "False", "ALLOW_PRIVATE_UPSTREAMS": "False",
    }


def test_hsts_preload_is_sent_only_when_configured(tmp_path):
    assert effective_settings(tmp_path, SECURE_HSTS_PRELOAD="true")["SECURE_HSTS_PRELOAD"] == "True"
    result = manage("check", "--deploy", data_dir=tmp_path, **production(SECURE_HSTS_PRELOAD="true"))
    assert result.returncode == 0 and "no issues" in result.stdout, result.stdout + result.stderr


def test_make_run_asks_for_the_demo_settings_explicitly():
    dry_run = subprocess.run(["make", "-n", "run"], cwd=BASE_DIR, capture_output=True, text=True, timeout=30,
                             check=True).stdout
    serve = [line for line in dry_run.splitlines() if "manage.py serve" in line]
    assert serve and all(line.startswith("DEBUG=true ") for line in serve), dry_run


URL_PASSWORD = secrets.token_hex(8)  # generated: the page must not show it, not even in this file's source


def _url_valued_settings(settings):
    settings.DATABASE_URL = f"postgres://weathervane:{URL_PASSWORD}@db.example.com:5432/wv"
    settings.REDIS_URL = f"redis://:{URL_PASSWORD}@redis.example.com:6379/0"
    settings.CELERY_BROKER_URL = f"amqp://celery:{URL_PASSWORD}@mq.example.com//"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                   "LOCATION": f"redis://:{URL_PASSWORD}@cache.example.com:6379/0"}}


def test_a_debug_page_masks_the_credentials_in_every_url_valued_setting(rf, settings):
    from django.views.debug import technical_500_response

    settings.DEBUG = True
    _url_valued_settings(settings)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        page = technical_500_response(rf.get("/"), *sys.exc_info()).content.decode()
    assert "db.example.com" in page and "mq.example.com" in page and "cache.example.com" in page
    assert URL_PASSWORD not in page


# --- Where provider base URLs may point -------------------------------------------------------


@pytest.mark.parametrize(("url", "code"), [
    ("https://user:password@api.example.com/v1", "credentials"),
    ("ftp://api.example.com/v1", "scheme"),
    ("file:///etc/passwd", "scheme"),
    ("https:///v1", "host"),
    ("https://api.example.com/v1?key=1", "query"),
])
def test_a_base_url_must_be_plain_http_without_credentials(url, code):
    with pytest.raises(ValidationError) as refused:
        netguard.validate_upstream_url(url, allow_private=True)
    assert refused.value.code == code
    assert "password" not in str(refused.value)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8001/v1", "http://localhost/v1", "http://10.1.2.3/v1", "http://192.168.0.10/v1",
    "http://169.254.169.254/latest", "http://[::1]/v1", "http://[::ffff:127.0.0.1]/v1", "http://db.internal/v1",
])
def test_internal_addresses_are_refused_unless_allowed(url):
    with pytest.raises(ValidationError) as refused:
        netguard.validate_upstream_url(url, allow_private=False)
    assert refused.value.code == "private"
    netguard.validate_upstream_url(url, allow_private=True)


def test_a_public_address_is_allowed():
    netguard.validate_upstream_url("https://api.openai.com/v1", allow_private=False)
    netguard.validate_upstream_url("https://93.184.216.34/v1", allow_private=False)


def test_a_hostname_is_checked_again_at_connect_time(monkeypatch):
    resolved = {"api.example.com": "127.0.0.1", "cdn.example.com": "93.184.216.34"}
    monkeypatch.setattr(netguard.socket, "getaddrinfo", lambda host, *a, **k: [(2, 1, 6, "", (resolved[host], 0))])
    netguard.validate_upstream_url("https://api.example.com/v1", allow_private=False)  # save time: not resolved

    with pytest.raises(netguard.UpstreamBlocked, match="internal address"):
        netguard.check_host("api.example.com", allow_private=False)
    netguard.check_host("cdn.example.com", allow_private=False)
    netguard.check_host("api.example.com", allow_private=True)


# --- Generated key files ----------------------------------------------------------------------


def test_a_generated_key_file_is_never_visible_empty_and_is_owner_only(tmp_path, monkeypatch):
    from dashboard import settings as project

    monkeypatch.setattr(project, "DATA_DIR", tmp_path)
    seen = []

    def make():  # runs while the file is being made: another process reading now must not find it empty
        seen.append((tmp_path / "fernet.key").exists())
        return "the-key"

    assert project._local_secret("fernet.key", make) == "the-key"
    assert seen == [False]
    assert (tmp_path / "fernet.key").stat().st_mode & 0o777 == 0o600
    assert project._local_secret("fernet.key", lambda: "another-key") == "the-key"  # made once
    assert [p.name for p in tmp_path.iterdir()] == ["fernet.key"]  # no temporary left behind


def test_a_key_file_others_can_read_stops_the_start(tmp_path):
    assert manage("check", data_dir=tmp_path).returncode == 0  # creates the keys, owner-only
    (tmp_path / "fernet.key").chmod(0o644)
    result = manage("check", data_dir=tmp_path)
    assert result.returncode != 0
    assert "weathervane.E002" in result.stderr and "chmod 600" in result.stderr


@pytest.mark.parametrize(("behind_proxy", "hops"), [("false", "0"), ("true", "1")])
def test_throttles_and_lockouts_trust_x_forwarded_for_only_behind_the_proxy(tmp_path, behind_proxy, hops):
    code = ("from django.conf import settings; "
            "print(settings.REST_FRAMEWORK['NUM_PROXIES'], settings.AXES_CLIENT_IP_CALLABLE)")
    result = manage("shell", "--no-imports", "-c", code, data_dir=tmp_path, WEATHERVANE_BEHIND_PROXY=behind_proxy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [hops, "routing.api.authentication.client_address"]
