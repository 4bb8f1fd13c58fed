"""The gateway tests' simulator and gateway servers, for the load tests that drive them; and a data directory of
the test's own."""

import pytest


@pytest.fixture(autouse=True)
def own_data_dir(settings, tmp_path):
    """The address `serve` notes for the CLI goes to the data directory: a test's own, never the developer's."""
    settings.DATA_DIR = tmp_path
