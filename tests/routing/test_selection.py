"""Target choice: weighted split, weight 0, sticky sessions, key rotation (pure, no I/O)."""

import math
import random
from collections import Counter
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from routing.gateway import selection


def targets(**weights):
    return [SimpleNamespace(deployment=name, weight=weight) for name, weight in weights.items()]


def binomial_interval_99(n, p):
    """Normal approximation of the 99% interval of a Binomial(n, p) count."""
    spread = 2.5758 * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


def test_it_splits_2000_requests_95_5_within_the_99_percent_binomial_interval():
    pool = targets(stable=95, canary=5)
    totals = selection.cumulative(t.weight for t in pool)
    rng = random.Random(20261122)
    counts = Counter(selection.pick_weighted(pool, totals, rng).deployment for _ in range(2000))
    low, high = binomial_interval_99(2000, 0.05)
    assert low <= counts["canary"] <= high
    assert counts["stable"] + counts["canary"] == 2000


def test_a_target_with_weight_0_gets_exactly_nothing():
    pool = targets(a=60, off=0, b=40)
    totals = selection.cumulative(t.weight for t in pool)
    rng = random.Random(1)
    picked = Counter(selection.pick_weighted(pool, totals, rng).deployment for _ in range(5000))
    assert picked["off"] == 0
    assert Counter(selection.choose(pool, rng).deployment for _ in range(2000))["off"] == 0
    assert all(selection.sticky_choice(pool, f"s{i}").deployment != "off" for i in range(2000))


def test_it_chooses_nothing_when_every_weight_is_0():
    pool = targets(a=0, b=0)
    assert selection.pick_weighted(pool, selection.cumulative([0, 0]), random.Random()) is None
    assert selection.choose(pool, random.Random()) is None
    assert selection.sticky_choice(pool, "session") is None


def test_a_session_keeps_its_target_while_the_weights_stay_the_same():
    pool = targets(a=50, b=30, c=20)
    for i in range(200):
        first = selection.sticky_choice(pool, f"user-{i}")
        assert all(selection.sticky_choice(pool, f"user-{i}") is first for _ in range(3))


def test_sticky_sessions_follow_the_weights_over_many_sessions():
    pool = targets(stable=90, canary=10)
    counts = Counter(selection.sticky_choice(pool, f"session-{i}").deployment for i in range(2000))
    low, high = binomial_interval_99(2000, 0.10)
    assert low <= counts["canary"] <= high


def test_a_weight_change_moves_only_the_sessions_it_must():
    before = targets(stable=90, canary=10)
    after = targets(stable=80, canary=20)
    sessions = [f"session-{i}" for i in range(2000)]
    moved = Counter()
    for session in sessions:
        old = selection.sticky_choice(before, session).deployment
        new = selection.sticky_choice(after, session).deployment
        if old != new:
            moved[(old, new)] += 1
    # Only stable -> canary moves happen, and about the 10% of sessions the shift needs.
    assert set(moved) <= {("stable", "canary")}
    assert 120 <= moved[("stable", "canary")] <= 290


def test_without_its_target_a_session_moves_to_its_next_choice_and_back():
    pool = targets(a=40, b=30, c=30)
    session = next(f"s{i}" for i in range(1000) if selection.sticky_choice(pool, f"s{i}").deployment == "a")
    rest = [t for t in pool if t.deployment != "a"]
    fallback = selection.sticky_choice(rest, session)
    assert fallback.deployment in ("b", "c")
    assert selection.sticky_choice(rest, session) is fallback
    assert selection.sticky_choice(pool, session).deployment == "a"


@given(st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=6),
       st.integers(min_value=0, max_value=10**6))
def test_weighted_choice_only_ever_returns_targets_with_weight(weights, seed):
    pool = [SimpleNamespace(deployment=f"d{i}", weight=w) for i, w in enumerate(weights)]
    picked = selection.choose(pool, random.Random(seed))
    if sum(weights) == 0:
        assert picked is None
    else:
        assert picked.weight > 0


def test_key_rotation_starts_at_the_cursor_and_wraps():
    keys = ("k1", "k2", "k3")
    assert selection.rotation(keys, 0) == ("k1", "k2", "k3")
    assert selection.rotation(keys, 4) == ("k2", "k3", "k1")
    assert selection.rotation(("only",), 7) == ("only",)
    assert selection.rotation((), 3) == ()
