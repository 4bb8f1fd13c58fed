"""The load-test pages: the list with its start form, one run with its figures, and live progress on the socket."""

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from dashboard import live
from probes.loadtest.metrics import Sample, summarise
from probes.loadtest.models import LoadTestRun
from tests.dashboard.conftest import live_socket


def finished_run():
    samples = [Sample(outcome="ok", ttft=120.0, e2e=900.0, tokens_out=20, cost=0.001),
               Sample(outcome="server_error", status=500, e2e=30.0, error="HTTP 500: upstream fell over")]
    result = {"status": "finished", "summary": summarise(samples, 2.0), "phases": [],
              "samples": [s.row() for s in samples],
              "thresholds": [{"threshold": "error_rate < 1%", "value": 0.5, "ok": False}], "client_limited": True,
              "client_limited_reason": "p95 dispatch lag 40.0 ms behind schedule", "cancelled": 0}
    return LoadTestRun.objects.create(target_label="route:chat", settings={"profile": "concurrent", "requests": 2,
                                      "duration_s": 60, "max_tokens": 8, "stream": True},
                                      status="finished", passed=False, result=result)


def client(user):
    c = Client()
    c.force_login(user)
    return c


@pytest.mark.django_db
def test_staff_get_the_start_form_and_viewers_only_the_list(admin_user, viewer_user):
    run = finished_run()
    staff_page = client(admin_user).get("/load-tests/").content.decode()
    assert 'id="loadtest-form"' in staff_page and f'data-run="{run.pk}"' in staff_page
    viewer_page = client(viewer_user).get("/load-tests/").content.decode()
    assert 'id="loadtest-form"' not in viewer_page and "Read-only" in viewer_page
    assert "thresholds failed" in viewer_page


@pytest.mark.django_db
def test_a_finished_run_shows_its_figures_its_first_errors_and_that_the_client_limited_it(viewer_user):
    page = client(viewer_user).get(f"/load-tests/{finished_run().pk}/").content.decode()
    assert "Time to first token" in page and "120 ms" in page
    assert "HTTP 500: upstream fell over" in page
    assert "Limited by the load generator" in page
    assert "error_rate &lt; 1%" in page and "failed" in page
    assert 'id="lt-latency"' in page


@pytest.mark.django_db
def test_outsiders_get_403_and_anonymous_visitors_the_login(outsider_user):
    run = finished_run()
    assert client(outsider_user).get("/load-tests/").status_code == 403
    assert client(outsider_user).get(f"/dashboard-data/load-tests/{run.pk}/").status_code == 403
    assert Client().get("/load-tests/").status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_a_runs_progress_reaches_open_dashboards_and_only_its_latest_figures(viewer_user):
    socket = await live_socket(viewer_user)
    ok, _ = await socket.connect()
    assert ok
    try:
        for done in (1, 2, 3):
            await sync_to_async(live.loadtest_progress)({"run": 7, "status": "running", "progress": {"done": done}})
        frame = await socket.receive_json_from(timeout=2)
        assert frame["messages"] == [{"type": "loadtest.progress",
                                      "payload": {"run": 7, "status": "running", "progress": {"done": 3}}}]
    finally:
        await socket.disconnect()
