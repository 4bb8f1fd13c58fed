"""Retry backoff and budget, SSE parsing and the circuit breaker (pure, no I/O)."""

import random
import time

import pytest

from routing import sse
from routing.gateway import retry
from routing.gateway.breaker import BreakerPolicy, Breakers
from routing.models import CircuitState


def test_backoff_is_full_jitter_under_an_exponential_cap():
    rng = random.Random(3)
    for attempt, ceiling in ((1, 0.05), (2, 0.1), (3, 0.2), (10, 2.0)):
        waits = [retry.backoff(attempt, rng) for _ in range(500)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2  # spread over the whole range


def test_the_retry_budget_allows_a_share_of_the_traffic_plus_a_trickle():
    now = [0.0]
    budget = retry.RetryBudget(ratio=0.1, min_per_s=1.0, burst=5.0, clock=lambda: now[0])
    assert sum(budget.withdraw() for _ in range(10)) == 5  # the initial burst, then dry
    for _ in range(100):
        budget.deposit()
    assert sum(budget.withdraw() for _ in range(20)) == 5  # 100 requests x 10% = 10, capped at the burst of 5
    now[0] += 2.0
    assert sum(budget.withdraw() for _ in range(5)) == 2  # 1 per second when idle


def test_sse_split_keeps_partial_events_for_later():
    events, rest = sse.split_events(b'data: {"a": 1}\n\ndata: {"b"')
    assert events == [b'data: {"a": 1}\n\n']
    assert rest == b'data: {"b"'
    events, rest = sse.split_events(rest + b': 2}\r\n\r\n')
    assert events == [b'data: {"b": 2}\n\n'] and rest == b""


def test_sse_parse_tells_done_json_and_garbage_apart():
    assert sse.parse(sse.event_data(b"data: [DONE]\n\n")) is sse.DONE
    assert sse.parse(sse.event_data(b'data: {"x": 1}\n\n')) == {"x": 1}
    assert sse.parse(sse.event_data(b": keep-alive\n\n")) is None
    with pytest.raises(sse.Malformed):
        sse.parse(sse.event_data(b'data: {"choices": [{"delta": {"content": "tok\n\n'))


def test_sse_helpers_find_content_usage_and_errors():
    chunk = {"choices": [{"delta": {"content": "hi"}}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
    assert sse.has_content(chunk) and not sse.has_content({"choices": [{"delta": {"role": "assistant"}}]})
    assert sse.usage_of(usage) == (5, 7) and sse.is_usage_only(usage) and not sse.is_usage_only(chunk)
    assert sse.error_of({"error": {"message": "overloaded"}}) == "overloaded"
    assert sse.error_of(chunk) is None


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def breakers(clock, changes, **policy):
    return Breakers(BreakerPolicy(**{"consecutive": 3, "cooldown_s": 5, "max_cooldown_s": 20, **policy}),
                    on_change=lambda *change: changes.append(change), clock=clock)


def test_the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown():
    clock, changes = Clock(), []
    b = breakers(clock, changes)
    for _ in range(3):
        assert b.available(1)
        b.failure(1, "HTTP 500")
    assert not b.available(1) and b.state(1) == CircuitState.OPEN
    assert changes[-1][:2] == (1, CircuitState.OPEN) and "3 consecutive failures" in changes[-1][2]
    clock.now += 5.1
    assert b.available(1)
    b.begin(1)
    assert b.state(1) == CircuitState.HALF_OPEN and changes[-1][1] == CircuitState.HALF_OPEN
    assert not b.available(1)  # one trial at a time
    b.success(1)
    assert b.state(1) == CircuitState.CLOSED and changes[-1][1] == CircuitState.CLOSED


def test_a_failed_trial_reopens_with_a_longer_cooldown():
    clock, changes = Clock(), []
    b = breakers(clock, changes)
    for _ in range(3):
        b.failure(1, "timeout")
    for cooldown in (10, 20, 20):  # doubles, capped at max_cooldown_s
        clock.now += 100
        b.begin(1)
        b.failure(1, "timeout")
        assert b.state(1) == CircuitState.OPEN
        clock.now += cooldown - 0.1
        assert not b.available(1)
        clock.now -= cooldown - 0.1


def test_the_breaker_opens_on_a_failure_rate_over_a_minimum_of_requests():
    clock, changes = Clock(), []
    b = breakers(clock, changes, consecutive=100, min_requests=10, failure_rate=0.5)
    for i in range(9):
        (b.success if i % 2 else b.failure)(1, *([] if i % 2 else ["HTTP 503"]))
    assert b.state(1) == CircuitState.CLOSED  # 5 of 9: under the minimum of requests
    b.failure(1, "HTTP 503")
    assert b.state(1) == CircuitState.OPEN and "6 of the last 10" in changes[-1][2]


def test_successes_reset_the_consecutive_count():
    clock, changes = Clock(), []
    b = breakers(clock, changes)
    for _ in range(10):  # 2 in a row at most, and a third of all: neither rule trips
        b.failure(1, "x")
        b.failure(1, "x")
        for _ in range(4):
            b.success(1)
    assert b.state(1) == CircuitState.CLOSED and changes == []


def test_a_newer_state_from_another_process_is_taken_over_and_an_older_one_ignored():
    clock, changes = Clock(), []
    b = breakers(clock, changes)
    now = time.time()
    b.adopt({7: (CircuitState.OPEN, now - 1.0, "3 consecutive failures")})
    assert not b.available(7) and "another gateway process" in b.by_deployment[7].reason
    clock.now += 4.1  # the 5 s cooldown started a second before we heard of it
    assert b.available(7)
    b.adopt({7: (CircuitState.CLOSED, now - 10.0, "old news")})
    assert b.state(7) == CircuitState.OPEN
    b.adopt({7: (CircuitState.CLOSED, time.time() + 1, "trial request succeeded")})
    assert b.state(7) == CircuitState.CLOSED and changes == []  # nothing echoed back


def test_by_default_a_recovered_primary_gets_traffic_back_within_4_seconds_of_recovering():
    """Failing for a minute must not push the next trial further out than the capped cooldown."""
    clock, changes = Clock(), []
    b = Breakers(BreakerPolicy(), on_change=lambda *change: changes.append(change), clock=clock)
    started = clock.now
    while clock.now - started < 60:  # one minute of failures: every trial fails
        if b.available(1):
            b.begin(1)
            b.failure(1, "HTTP 503")
        clock.now += 0.5
    recovered_at = clock.now
    while not b.available(1):
        clock.now += 0.5
    assert clock.now - recovered_at <= BreakerPolicy().max_cooldown_s == 4
    b.begin(1)
    b.success(1)
    assert b.state(1) == CircuitState.CLOSED


def test_a_successful_probe_reported_half_open_ends_the_cooldown_at_once():
    clock, changes = Clock(), []
    b = breakers(clock, changes, cooldown_s=20)
    for _ in range(3):
        b.failure(1, "HTTP 503")
    assert not b.available(1)
    b.adopt({1: (CircuitState.HALF_OPEN, time.time() + 1, "a probe succeeded; the next request is the trial")})
    assert b.available(1)
    b.begin(1)
    assert b.state(1) == CircuitState.HALF_OPEN and not b.available(1)  # still one trial at a time
