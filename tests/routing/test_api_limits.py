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
    # Only that token key is locked out: a token that verifies still works from the same address.
    assert admin_api.get(f"{API}/routes/").status_code == 200
    assert not any(WRONG_TOKEN in record.getMessage() for record in caplog.records)


@pytest.fixture
def behind_proxy(settings):
    """WEATHERVANE_BEHIND_PROXY's effect: one proxy hop appends the client's address to X-Forwarded-For."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}


def via_proxy(client_address, token):
    """An API client whose requests all arrive from the proxy at 10.0.0.2, forwarded for `client_address`."""
    client = APIClient(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"198.51.100.99, {client_address}")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def made_up_token(n):
    return f"wvt_{n:011x}" + "f" * 53


def test_behind_a_proxy_made_up_tokens_lock_out_no_token_user(behind_proxy, admin_user, settings):
    from routing.models import ApiToken

    for n in range(20):  # 20 different made-up tokens from one address: each key failed once
        assert via_proxy("203.0.113.7", made_up_token(n)).get(f"{API}/routes/").status_code == 401
    _, good = ApiToken.objects.create(admin_user, name="ci")
    assert via_proxy("203.0.113.7", good).get(f"{API}/routes/").status_code == 200
    assert via_proxy("203.0.113.8", good).get(f"{API}/routes/").status_code == 200


def test_behind_a_proxy_one_token_key_repeated_is_locked_out_for_its_client_only(behind_proxy, settings, db):
    guesses = [via_proxy("203.0.113.7", made_up_token(7)).get(f"{API}/routes/").status_code
               for _ in range(settings.AXES_FAILURE_LIMIT + 1)]
    assert guesses == [401] * (settings.AXES_FAILURE_LIMIT - 1) + [429, 429]
    # The same key from another client behind the same proxy is counted apart.
    assert via_proxy("203.0.113.8", made_up_token(7)).get(f"{API}/routes/").status_code == 401


def test_a_valid_token_works_even_when_its_own_key_is_locked_out(admin_user, settings):
    from routing.models import ApiToken

    _, good = ApiToken.objects.create(admin_user, name="ci")
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION=f"Token {good[:15]}{'0' * (len(good) - 15)}")
    assert [forged.get(f"{API}/routes/").status_code for _ in range(settings.AXES_FAILURE_LIMIT)][-1] == 429
    owner = APIClient()
    owner.credentials(HTTP_AUTHORIZATION=f"Token {good}")
    assert owner.get(f"{API}/routes/").status_code == 200


def test_without_a_proxy_a_forwarded_for_header_is_not_a_new_address(settings, db):
    for n in range(settings.AXES_FAILURE_LIMIT):
        spoofing = APIClient(HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        spoofing.credentials(HTTP_AUTHORIZATION=f"Token {WRONG_TOKEN}")
        status = spoofing.get(f"{API}/routes/").status_code
    assert status == 429


def test_a_token_that_is_not_utf8_is_a_plain_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token wvt_\xff\xfe" + "a" * 60)
    assert client.get(f"{API}/routes/").status_code == 401


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
