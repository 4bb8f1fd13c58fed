"""Live figures mean what they say: rates over the last minute, a route's traffic per minute, tokens/s only
for answers long enough to measure, and one number format for pages and sentences."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.views import routes_data
from probes.models import ProbeResult, ProbeTarget, Rollup, Source
from routing import formats
from routing.outcomes import Outcome
from tests.dashboard.test_pages import initial_data, signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def clock(monkeypatch):
    """Stop the clock 30 s into a minute (a few minutes ago, so every row written is in the past)."""
    now = timezone.now().replace(second=30, microsecond=0) - timedelta(minutes=3)
    monkeypatch.setattr(timezone, "now", lambda: now)
    return now


def traffic(route, deployment, minute, count, errors=0):
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=deployment, route=route, count=count,
                          ok=count - errors, errors={"server_error": errors} if errors else {})


@pytest.fixture
def steady(seeded, clock):
    """stable: 60 requests a minute, steadily; canary: a burst of 600 ten minutes ago and 20 in this minute."""
    Rollup.objects.filter(source=Source.TRAFFIC).delete()
    minute = clock.replace(second=0)
    route, stable, canary = seeded["route"], seeded["stable"], seeded["canary"]
    traffic(route, stable, minute - timedelta(minutes=1), 60)
    traffic(route, stable, minute, 30)  # half a minute so far
    traffic(route, canary, minute - timedelta(minutes=10), 600, errors=6)
    traffic(route, canary, minute, 20)
    return seeded


def test_requests_per_second_and_share_read_the_last_minute_not_a_15_minute_average(steady, admin_user):
    response = signed_in(admin_user).get("/routes/")
    targets = {t["deployment"]: t for t in initial_data(response)["routes"][0]["targets"]}
    assert targets["stable"]["rps"] == pytest.approx(1.0)  # 60 requests in the last 60 s, not 90/900 = 0.1/s
    assert targets["canary"]["rps"] == pytest.approx(20 / 60)  # the old burst is not "now"
    assert targets["stable"]["share"] == pytest.approx(0.75) and targets["canary"]["share"] == pytest.approx(0.25)
    assert targets["canary"]["count"] == 620 and targets["canary"]["error_rate"] == pytest.approx(6 / 620)
    page = response.content.decode()
    stable_row = page[page.index('<tr data-deployment="stable"'):].split("</tr>")[0]
    assert "1.00/s" in stable_row and "75.0 %" in stable_row
    assert "share and requests/s over the last minute" in page and "over the last 15 min" in page


def test_the_routes_payload_charts_each_targets_requests_per_minute(steady, clock):
    chart = routes_data()["routes"][0]["chart"]
    assert list(chart["targets"]) == ["canary", "stable"] and len(chart["t"]) == 31  # 30 minutes and this one
    assert chart["t"][-1] == int(clock.replace(second=0).timestamp() * 1000)
    assert chart["targets"]["stable"][-2:] == [pytest.approx(1.0), pytest.approx(1.0)]  # 60 / 60 s, 30 / 30 s
    assert chart["targets"]["canary"][-11] == pytest.approx(10.0) and chart["targets"]["canary"][-2] == 0


def test_a_quiet_route_reads_below_a_hundredth_not_zero(seeded, clock, admin_user):
    Rollup.objects.filter(source=Source.TRAFFIC).delete()
    traffic(seeded["route"], seeded["canary"], clock.replace(second=0) - timedelta(minutes=1), 1)
    page = signed_in(admin_user).get("/routes/").content.decode()
    canary_row = page[page.index('<tr data-deployment="canary"'):].split("</tr>")[0]
    assert "&lt; 0.01/s" in canary_row and "0.00/s" not in page  # half a request in the last minute


def test_the_overview_shows_each_routes_rate_errors_p95_and_active_rollout(steady, admin_user):
    from routing.rollouts.models import Rollout, RolloutState

    rollout = Rollout.objects.create(route=steady["route"], canary=steady["canary"], state=RolloutState.RUNNING,
                                     plan=[{"weight": 50, "min_dwell_s": 0, "min_requests": 0}],
                                     guards=[{"metric": "errors", "allowed": 0.01}], created_by="admin")
    response = signed_in(admin_user).get("/")
    route = initial_data(response)["routes"][0]
    assert route["rps"] == pytest.approx(80 / 60) and route["error_rate"] == pytest.approx(6 / 710)
    assert route["rollout"]["id"] == rollout.pk
    row = response.content.decode().split('<tr data-route="chat">')[1].split("</tr>")[0]
    assert "1.33/s" in row and "0.8 %" in row and f"/rollouts/{rollout.pk}/" in row


def test_tokens_per_second_is_hidden_for_answers_too_short_to_measure(seeded, admin_user):
    minute = timezone.now().replace(second=0, microsecond=0)
    Rollup.objects.all().delete()
    # Eight-token answers arriving in one chunk: "102,647 tokens/s" is their chunking, not a speed.
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=seeded["stable"], route=seeded["route"],
                          count=10, ok=10, tokens_out=80, tps_sum=1_026_470.0, tps_count=10)
    # 200-token answers at 50 tokens/s (4 s each) are long enough.
    Rollup.objects.create(minute=minute, source=Source.TRAFFIC, deployment=seeded["canary"], route=seeded["route"],
                          count=10, ok=10, tokens_out=2000, tps_sum=500.0, tps_count=10)
    response = signed_in(admin_user).get("/")
    tiles = {t["name"]: t for t in initial_data(response)["deployments"]}
    assert tiles["stable"]["tps"] is None and tiles["canary"]["tps"] == pytest.approx(50)
    page = response.content.decode()
    assert "102,647" not in page and "102647" not in page
    assert "fewer than 16 output tokens, or generated in under 250 ms" in page


def test_a_short_probe_answer_shows_no_tokens_per_second(seeded, viewer_user):
    target = ProbeTarget.objects.get(deployment=seeded["stable"], api_key=None)
    for slot, (tokens, tps) in enumerate(((8, 9_000.0), (16, 40.0)), start=100):
        ProbeResult.objects.create(target=target, deployment=seeded["stable"], slot=slot, started_at=timezone.now(),
                                   outcome=Outcome.OK, status_code=200, total_ms=400.0, tokens_out=tokens,
                                   tokens_per_s=tps)
    probes = initial_data(signed_in(viewer_user).get("/deployments/stable/"))["probes"]
    assert sorted((p["tps"] is None) for p in probes) == [False, True]  # 16 tokens over 400 ms: measurable
    assert "9,000" not in signed_in(viewer_user).get("/deployments/stable/").content.decode()


@pytest.mark.parametrize("value, text", [
    (0.0523, "5.2 %"), (0.5, "50.0 %"), (None, "–"), (float("nan"), "–"),
])
def test_a_ratio_reads_the_same_everywhere(value, text):
    assert formats.pct(value) == text


@pytest.mark.parametrize("value, text", [(12.0, "12"), (12345.6, "12,346"), (0, "0"), (None, "–")])
def test_a_count_reads_as_a_whole_number(value, text):
    assert formats.whole(value) == text


def test_the_overview_links_each_route_to_its_own_section_of_the_routes_page(seeded, viewer_user):
    page = signed_in(viewer_user).get("/").content.decode()
    assert '<a href="/routes/#route:chat">chat</a>' in page
    assert 'id="route:chat"' in signed_in(viewer_user).get("/routes/").content.decode()
