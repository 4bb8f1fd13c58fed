from datetime import timedelta

import pytest
from django.utils import timezone

from probes.rollups import Aggregator, save_deltas, window_stats
from routing.models import Deployment, Provider


@pytest.fixture
def deployment(db):
    provider = Provider.objects.create(name="sim", base_url="http://127.0.0.1:9/v1")
    return Deployment.objects.create(name="dep", provider=provider, upstream_model="steady")


def test_rollups_merge_across_flushes_and_answer_percentiles(deployment):
    now = timezone.now()
    for batch in (range(1, 51), range(51, 101)):
        agg = Aggregator("traffic")
        for ms in batch:
            agg.add(deployment.id, when=now, outcome="ok", latency_ms=ms, ttft_ms=ms / 2, tokens_out=10)
        agg.add(deployment.id, when=now, outcome="server_error", latency_ms=5)
        save_deltas(agg.drain())
    stats = window_stats(deployment.id, "traffic", now - timedelta(minutes=5))
    assert stats["count"] == 102 and stats["ok"] == 100
    assert stats["errors"] == {"server_error": 2}
    assert 48 <= stats["p50_ms"] <= 52
    assert 97 <= stats["p99_ms"] <= 101
    assert stats["tokens_out"] == 1000


def test_a_window_excludes_older_minutes(deployment):
    now = timezone.now()
    agg = Aggregator("probe")
    agg.add(deployment.id, when=now - timedelta(hours=2), outcome="timeout")
    agg.add(deployment.id, when=now, outcome="ok", latency_ms=10)
    save_deltas(agg.drain())
    assert window_stats(deployment.id, "probe", now - timedelta(minutes=5))["errors"] == {}
    assert window_stats(deployment.id, "probe", now - timedelta(days=1))["errors"] == {"timeout": 1}
