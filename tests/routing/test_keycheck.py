"""Encryption keys cannot silently diverge: a shared database needs WEATHERVANE_FERNET_KEYS, and a process
whose keys cannot read the database's secrets refuses to start, naming the key it expected."""

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.test import override_settings

from routing import crypto, keycheck
from routing.models import ApiKey, EncryptionKeyCheck, Provider
from tests.dashboard.test_settings import BASE_DIR, free_port, get_when_up, manage, settings_env, stop

FIRST, SECOND, THIRD = (Fernet.generate_key().decode() for _ in range(3))


def test_a_process_with_a_database_url_and_no_keys_stops_naming_the_variable(tmp_path):
    result = manage("check", data_dir=tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:9/weathervane")
    assert result.returncode != 0
    assert "WEATHERVANE_FERNET_KEYS must be set when DATABASE_URL is set" in result.stderr
    assert not (tmp_path / "fernet.key").exists()


def test_the_embedded_mode_still_makes_its_own_key_file(tmp_path):
    result = manage("check", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fernet.key").read_text().strip()


def test_a_second_process_with_other_keys_refuses_to_start_naming_the_expected_fingerprint(tmp_path):
    assert manage("migrate", "-v0", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST).returncode == 0
    first = manage("check", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST)
    assert first.returncode == 0, first.stderr

    second = manage("check", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=SECOND)
    output = second.stdout + second.stderr
    assert second.returncode != 0
    assert "weathervane.E001" in output
    assert f"encrypted with the key of fingerprint {crypto.fingerprint(FIRST)}" in output
    assert crypto.fingerprint(SECOND) in output and SECOND not in output and FIRST not in output

    during_rotation = manage("check", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=f"{SECOND},{FIRST}")
    assert during_rotation.returncode == 0, during_rotation.stdout + during_rotation.stderr


def test_a_celery_worker_with_other_keys_does_not_start(tmp_path):
    assert manage("migrate", "-v0", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST).returncode == 0
    assert manage("check", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST).returncode == 0
    celery = [str(Path(sys.executable).with_name("celery")), "-A", "dashboard", "worker", "-P", "solo", "-l", "warning"]
    env = settings_env(tmp_path, WEATHERVANE_FERNET_KEYS=SECOND)  # no REDIS_URL: the in-memory broker
    worker = subprocess.run(celery, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert worker.returncode != 0
    assert "weathervane.E001: The secret-encryption keys" in worker.stderr
    assert crypto.fingerprint(FIRST) in worker.stderr


def test_daphne_with_other_keys_on_a_shared_database_does_not_start(tmp_path):
    """Daphne runs no system checks; dashboard.asgi checks the keys itself when DATABASE_URL is set."""
    shared = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    assert manage("migrate", "-v0", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST, **shared).returncode == 0
    assert manage("check", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST, **shared).returncode == 0
    load = [sys.executable, "-c", "import dashboard.asgi"]
    env = settings_env(tmp_path, WEATHERVANE_FERNET_KEYS=SECOND, **shared)
    daphne = subprocess.run(load, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert daphne.returncode != 0
    assert f"fingerprint {crypto.fingerprint(FIRST)}" in daphne.stderr
    env["WEATHERVANE_FERNET_KEYS"] = FIRST
    assert subprocess.run(load, cwd=BASE_DIR, env=env, capture_output=True, timeout=60).returncode == 0


@pytest.mark.django_db
def test_the_first_process_records_its_key_and_others_are_compared_with_it():
    with override_settings(FERNET_KEYS=[FIRST]):
        assert keycheck.verify_key_set() == crypto.fingerprint(FIRST)
    with override_settings(FERNET_KEYS=[SECOND]), pytest.raises(keycheck.KeysDiverge, match=crypto.fingerprint(FIRST)):
        keycheck.verify_key_set()
    assert EncryptionKeyCheck.objects.get().fingerprint == crypto.fingerprint(FIRST)


@pytest.mark.django_db
def test_rotating_the_secrets_moves_the_record_to_the_new_key():
    with override_settings(FERNET_KEYS=[FIRST]):
        keycheck.verify_key_set()
    with override_settings(FERNET_KEYS=[SECOND, FIRST]):
        call_command("rotate_secrets", stdout=open("/dev/null", "w"))
    with override_settings(FERNET_KEYS=[SECOND]):
        assert keycheck.verify_key_set() == crypto.fingerprint(SECOND)
    with override_settings(FERNET_KEYS=[FIRST]), pytest.raises(keycheck.KeysDiverge, match=crypto.fingerprint(SECOND)):
        keycheck.verify_key_set()


@pytest.mark.django_db
def test_on_first_use_keys_that_cannot_read_the_stored_secrets_are_refused():
    with override_settings(FERNET_KEYS=[FIRST]):
        key = ApiKey(provider=Provider.objects.create(name="sim", base_url="http://127.0.0.1:9/v1"), label="main")
        key.set_secret("sk-stored-before-the-check-0001")
        key.save()
    diverges = pytest.raises(keycheck.KeysDiverge, match="cannot decrypt the provider")
    with override_settings(FERNET_KEYS=[THIRD]), diverges:
        keycheck.verify_key_set()
    assert not EncryptionKeyCheck.objects.exists()


def test_uvicorn_run_directly_checks_the_keys_and_with_other_keys_does_not_start(tmp_path):
    """`uvicorn routing.gateway.serve:create_app --factory` runs no system checks; the factory checks the keys."""
    assert manage("migrate", "-v0", data_dir=tmp_path, WEATHERVANE_FERNET_KEYS=FIRST).returncode == 0
    port = free_port()
    uvicorn = [str(Path(sys.executable).with_name("uvicorn")), "routing.gateway.serve:create_app", "--factory",
               "--port", str(port), "--log-level", "warning"]
    env = settings_env(tmp_path, WEATHERVANE_FERNET_KEYS=FIRST)
    server = subprocess.Popen(uvicorn, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/livez", timeout=60).status_code == 200
    finally:
        stop(server)

    env["WEATHERVANE_FERNET_KEYS"] = SECOND  # the first process recorded FIRST's fingerprint
    refused = subprocess.run(uvicorn, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert f"fingerprint {crypto.fingerprint(FIRST)}" in refused.stderr and SECOND not in refused.stderr


def test_a_database_not_up_yet_is_waited_for_with_growing_pauses(monkeypatch):
    from django.db import OperationalError, connection

    refusals = iter([True, True, True])

    def ensure_connection():
        if next(refusals, False):
            raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "ensure_connection", ensure_connection)
    now, pauses = [0.0], []

    def sleep(seconds):
        pauses.append(seconds)
        now[0] += seconds

    assert keycheck.database_up(wait_s=5, sleep=sleep, clock=lambda: now[0])
    assert pauses == [0.25, 0.5, 1.0]
    refusals = iter([True] * 100)
    pauses.clear()
    assert not keycheck.database_up(wait_s=5, sleep=sleep, clock=lambda: now[0])
    assert sum(pauses) <= 5 and pauses[-1] == 2.0  # gave up within the wait


@pytest.mark.django_db(transaction=True)
def test_a_process_that_started_before_its_database_checks_the_keys_once_it_answers(monkeypatch):
    with override_settings(FERNET_KEYS=[FIRST]):
        keycheck.verify_key_set()
    stopped = []
    for keys, expected in (([FIRST], []), ([SECOND], ["stopped"])):
        answers = iter([False, False])  # unreachable twice, then up
        monkeypatch.setattr(keycheck, "database_up", lambda *args, answers=answers, **kwargs: next(answers, True))
        with override_settings(FERNET_KEYS=keys):
            keycheck._verify_when_up(pause_s=0, stop=lambda: stopped.append("stopped"))
        assert stopped == expected
