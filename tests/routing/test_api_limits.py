"""Abuse limits of the REST API: a lockout for guessed tokens (django-axes) and DRF's request throttling."""

import logging

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

API = "/api/v1"
WRONG_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def test_repeated_wrong_tokens_lock_the_address_out_saying_so(admin_api, settings, caplog):
    caplog.set_level(logging.DEBUG)
    guesser = APIClient()
    guesser.credentials(HTTP_AUTHORIZATION=f"Token {WRONG_TOKEN}")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert guesser.get(f"{API}/routes/").status_code == 401
    for _ in range(2):  # the attempt that reaches the limit, and every one after it
        locked = guesser.get(f"{API}/routes/")
        assert locked.status_code == 429 and "Locked out: too many failed token attempts" in locked.json()["detail"]
        assert int(locked["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    # From that address, tokens are refused until the cool-off ends, even a valid one.
    assert admin_api.get(f"{API}/routes/").status_code == 429
    assert not any(WRONG_TOKEN in record.getMessage() for record in caplog.records)


def test_a_valid_token_is_not_counted_as_a_failure(admin_api, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        assert admin_api.get(f"{API}/routes/").status_code == 200


@pytest.fixture
def three_per_minute(monkeypatch):
    monkeypatch.setitem(UserRateThrottle.THROTTLE_RATES, "user", "3/min")


def test_a_user_over_the_api_rate_gets_429_with_retry_after(viewer_api, admin_api, three_per_minute):
    assert [viewer_api.get(f"{API}/routes/").status_code for _ in range(3)] == [200, 200, 200]
    refused = viewer_api.get(f"{API}/routes/")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= 60
    assert "throttled" in refused.json()["detail"].lower()
    assert admin_api.get(f"{API}/routes/").status_code == 200  # counted per user
