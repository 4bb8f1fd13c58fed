"""Every process sets Django up; the gateway workers must not pay for the rollout statistics (scipy, numpy)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROBE = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
import django
django.setup()
import routing.gateway.app, routing.rollouts.models, routing.weights
print(sorted(name for name in ("scipy", "numpy") if name in sys.modules))
"""


def test_setting_django_up_for_the_gateway_loads_no_scipy_or_numpy():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
