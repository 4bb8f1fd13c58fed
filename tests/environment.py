"""The suite's environment, set before Django reads its settings (loaded by
`-p tests.environment` in pyproject.toml; a conftest would come too late).

The settings default to production; the suite runs on the demo settings that
`make run` asks for (plain http on loopback, the simulator as a private
upstream). Tests of the production defaults start manage.py with an
environment of their own (tests/dashboard/test_settings.py).
"""

import os

os.environ["DEBUG"] = "true"
