"""A probe's result reaches open dashboards once it is committed (probes/runner.py's on-commit push)."""

from unittest import mock

import pytest

from probes.runner import run_probe
from routing.outcomes import Outcome

pytestmark = pytest.mark.timeout(60)


def test_a_probe_result_is_pushed_live_once_committed(make_target, django_capture_on_commit_callbacks):
    target = make_target("instant")
    with mock.patch("dashboard.live.probe_result") as pushed:
        with django_capture_on_commit_callbacks(execute=False) as pending:
            result = run_probe(target.pk, 1000)
        assert not pushed.called  # not before the commit
        for callback in pending:
            callback()
    [point] = [call.args[0] for call in pushed.call_args_list]
    assert (point.target, point.deployment, point.outcome) == (target.pk, target.deployment.name, Outcome.OK)
    assert point.latency_ms == result.total_ms
