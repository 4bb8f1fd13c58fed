"""The README is part of the product: it must name every setting and command."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_environment_variable_the_settings_read_is_documented():
    settings_source = (ROOT / "dashboard" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|bool|int|float|list|url|rate)\(\s*"([A-Z0-9_]+)"', settings_source))
    readme = (ROOT / "README.md").read_text()
    assert names, "no environment variables found in settings.py"
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"README.md does not document: {', '.join(missing)}"


def test_the_readme_gives_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def code_blocks(readme):
    return re.findall(r"^```[a-z]*\n(.*?)^```", readme, re.S | re.M)


def test_the_readme_says_how_to_run_on_another_port_and_where_the_simulator_goes():
    readme = (ROOT / "README.md").read_text()
    assert "make run PORT=9000" in readme and "HOST=0.0.0.0" in readme
    assert "`WEATHERVANE_SIMULATOR_PORT`" in readme and "next port" in readme


def test_no_example_hard_codes_a_port_every_one_derives_it_from_port():
    blocks = code_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 10
    for block in blocks:
        for line in block.splitlines():
            fixed = re.findall(r"(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\]):\d+|--port \d+", line)
            assert not fixed, f"hard-coded port in a README example: {line.strip()}"
    loopback = [line for block in blocks for line in block.splitlines() if "127.0.0.1:" in line]
    assert loopback and all("PORT" in line for line in loopback), loopback


def test_make_run_serves_on_the_port_it_is_given_and_puts_the_simulator_next_to_it():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k != "WEATHERVANE_SIMULATOR_PORT"}
    plan = subprocess.run(["make", "-n", "run", "PORT=9000", "HOST=0.0.0.0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True).stdout
    serve = next(line for line in plan.splitlines() if "manage.py serve" in line)
    assert "--host 0.0.0.0 --port 9000" in serve and "WEATHERVANE_SIMULATOR_PORT=9001" in serve
    assert "WEATHERVANE_PUBLIC_URL=http://0.0.0.0:9000" in serve
