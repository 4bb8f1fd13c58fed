"""The gateway as the scaled mode runs it (`manage.py gateway`: two uvicorn workers on PostgreSQL) through a stop
of its Redis: every worker stays ready and keeps serving, /readyz names Redis as degraded, and each worker logs
the outage once when it starts and once when it ends. No in-process database here: the gateway is a subprocess
on a throwaway database of its own."""

import time

import httpx
import pytest

from tests.routing.gateway.helpers import wait_until
from tests.services import RedisServer

SEED = """
import sys
import django
django.setup()
from tests.routing.gateway.helpers import client_key, make_provider, make_route
class Simulator:
    base_url = sys.argv[1]
make_route("r", make_provider(Simulator), {"d": ("fast", 100)})
print(client_key().plaintext)
"""


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.scaled
@pytest.mark.timeout(120)
def test_the_scaled_gateway_stays_ready_and_serving_while_its_redis_is_stopped(sim, tmp_path):
    import subprocess
    import sys

    from cryptography.fernet import Fernet

    from tests.dashboard.test_settings import BASE_DIR, free_port, get_when_up, settings_env
    from tests.services import throwaway_database

    with throwaway_database("wv_gateway_outage") as url, RedisServer(tmp_path) as redis:
        env = settings_env(tmp_path, DATABASE_URL=url, REDIS_URL=redis.url, DEBUG="true",
                           WEATHERVANE_FERNET_KEYS=Fernet.generate_key().decode(),
                           DJANGO_SETTINGS_MODULE="dashboard.settings")
        run = {"cwd": BASE_DIR, "check": True, "capture_output": True, "text": True, "timeout": 120}
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], env=env, **run)
        key = subprocess.run([sys.executable, "-c", SEED, sim.base_url], env=env, **run).stdout.split()[-1]
        port = free_port()
        log = tmp_path / "gateway.log"
        with open(log, "w") as out:
            gateway = subprocess.Popen([sys.executable, "manage.py", "gateway", "--port", str(port), "--workers", "2",
                                        "--log-level", "warning"], cwd=BASE_DIR, env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        try:
            _ride_out_a_redis_stop(f"http://127.0.0.1:{port}", key, redis, log, get_when_up)
        finally:
            gateway.terminate()
            gateway.wait(15)
    text = log.read_text()
    lines = [line for line in text.splitlines() if "Redis is unavailable to the gateway's change notices" in line]
    assert len(lines) == 2, text[-3000:]  # once per worker process, not once per second
    assert len([line for line in text.splitlines() if "Redis answers the gateway's change notices again" in line]) == 2
    assert "Traceback" not in text and key not in text


def _ride_out_a_redis_stop(root, key, redis, log, get_when_up):
    def readiness():
        answer = httpx.get(f"{root}/readyz")
        return answer.status_code, answer.json()

    def chat():
        body = {"model": "r", "messages": [{"role": "user", "content": "hello"}]}
        return httpx.post(f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                          timeout=10).status_code

    assert get_when_up(f"{root}/livez").status_code == 200
    assert wait_until(lambda: readiness() == (200, {"status": "ready"}), timeout=30), log.read_text()[-3000:]
    redis.stop()
    # Both workers notice within a second or two; every answer meanwhile is ready and names Redis.
    assert wait_until(lambda: all(readiness() == (200, {"status": "ready", "degraded": ["redis"]})
                                  for _ in range(6)), timeout=10), log.read_text()[-3000:]
    assert [chat() for _ in range(6)] == [200] * 6
    time.sleep(3)  # each worker's listener retries every second meanwhile
    redis.start()
    assert wait_until(lambda: all(readiness() == (200, {"status": "ready"}) for _ in range(6)), timeout=15)
    assert chat() == 200
