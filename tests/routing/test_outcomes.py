"""The one meaning of an upstream's answer, pinned once for probes and the gateway."""

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from routing.outcomes import (
    MAX_RETRY_AFTER_S,
    REDACTED,
    Outcome,
    classify_status,
    error_message,
    http_failure,
    is_context_length_error,
    parse_retry_after,
    redact,
    redact_bytes,
)

# status: (outcome, retryable). Retryable means "another try (another key for 401/403) may help".
CLASSIFICATION = {
    400: (Outcome.CLIENT_ERROR, False),
    401: (Outcome.BAD_KEY, True),
    403: (Outcome.CLIENT_ERROR, False),  # request-dependent at many providers: passed through, key untouched
    404: (Outcome.CLIENT_ERROR, False),
    408: (Outcome.TIMEOUT, True),
    409: (Outcome.CLIENT_ERROR, True),
    413: (Outcome.CLIENT_ERROR, False),
    422: (Outcome.CLIENT_ERROR, False),
    429: (Outcome.RATE_LIMITED, True),
    500: (Outcome.SERVER_ERROR, True),
    501: (Outcome.SERVER_ERROR, False),
    502: (Outcome.SERVER_ERROR, True),
    503: (Outcome.SERVER_ERROR, True),
    504: (Outcome.SERVER_ERROR, True),
    529: (Outcome.SERVER_ERROR, False),
}


@pytest.mark.parametrize("status", sorted(CLASSIFICATION))
def test_every_status_means_one_thing(status):
    assert classify_status(status) == CLASSIFICATION[status]


def test_the_probes_and_the_gateway_store_outcomes_from_the_one_list():
    from probes.models import ProbeResult, ProbeTarget
    from routing.models import RequestLog

    for field in (ProbeResult._meta.get_field("outcome"), ProbeTarget._meta.get_field("last_outcome"),
                  RequestLog._meta.get_field("outcome")):
        assert field.choices == Outcome.choices, field


def test_a_context_length_error_is_never_retried():
    body = (b'{"error": {"message": "This model\'s maximum context length is 8192 tokens.", '
            b'"code": "context_length_exceeded"}}')
    assert is_context_length_error(body)
    assert not is_context_length_error(b'{"error": {"message": "Invalid value for temperature"}}')
    assert classify_status(400, body) == (Outcome.CLIENT_ERROR, False)
    assert classify_status(409, body) == (Outcome.CLIENT_ERROR, False)


class Headers(dict):
    def get(self, name, default=None):
        return super().get(name.lower(), default)


def test_retry_after_ms_wins_over_retry_after_seconds():
    assert parse_retry_after(Headers({"retry-after-ms": "250", "retry-after": "3"})) == 0.25
    assert parse_retry_after(Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(Headers({"retry-after": "1.5"})) == 1.5


def test_retry_after_can_be_an_http_date():
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(Headers({"retry-after": later}), now=now.timestamp()) == pytest.approx(42, abs=1)
    earlier = format_datetime(now - timedelta(seconds=42), usegmt=True)
    assert parse_retry_after(Headers({"retry-after": earlier}), now=now.timestamp()) == 0.0


@pytest.mark.parametrize("value", ["soon", "nan", "NaN", "", "1e", "--3"])
def test_garbage_retry_after_means_no_advice(value):
    assert parse_retry_after(Headers({"retry-after": value})) is None
    assert parse_retry_after(Headers({"retry-after-ms": value})) is None


@pytest.mark.parametrize("value, expected", [("inf", MAX_RETRY_AFTER_S), ("1e308", MAX_RETRY_AFTER_S),
                                             ("-5", 0.0), ("-inf", 0.0), ("99999999", MAX_RETRY_AFTER_S)])
def test_retry_after_is_finite_non_negative_and_capped(value, expected):
    seconds = parse_retry_after(Headers({"retry-after": value}))
    assert seconds == expected and math.isfinite(seconds)


SECRET = "sk-live-0123456789abcdefSECRET"


@pytest.mark.parametrize("text", [
    f"Incorrect API key provided: {SECRET}.",
    f"Authorization: Bearer {SECRET}",
    "Bearer abcdef0123456789ghijkl was refused",
    'invalid {"api_key": "zzzzzzzzzzzzzzzz"}',
    "access_token=qqqqqqqqqqqqqqqqqqqq&x=1",
])
def test_redaction_removes_keys_tokens_and_the_key_in_use(text):
    clean = redact(text, (SECRET,))
    assert REDACTED in clean
    for secret in (SECRET, "abcdef0123456789ghijkl", "zzzzzzzzzzzzzzzz", "qqqqqqqqqqqqqqqqqqqq"):
        assert secret not in clean


def test_redaction_keeps_ordinary_words():
    text = "max token length exceeded; the secret of success is a key-value pair"
    assert redact(text) == text


def test_the_key_in_use_is_redacted_even_when_it_looks_like_nothing():
    assert redact("your key plainpassword123 is wrong", ("plainpassword123",)) == f"your key {REDACTED} is wrong"


def test_error_message_reads_openai_shaped_and_plain_bodies():
    assert error_message(b'{"error": {"message": "Model overloaded", "type": "server_error"}}') == "Model overloaded"
    assert error_message(b'{"error": {"code": "rate_limit"}}') == "rate_limit"
    assert error_message(b'{"error": "plain string"}') == "plain string"
    assert error_message(b"<html>Bad Gateway</html>") == "<html>Bad Gateway</html>"
    assert error_message(b"") == "no details"
    assert len(error_message(b"x" * 5000)) == 300


def test_error_message_redacts_what_the_upstream_echoed():
    body = f'{{"error": {{"message": "Incorrect API key provided: {SECRET}"}}}}'.encode()
    assert SECRET not in error_message(body, (SECRET,))
    assert SECRET.encode() not in redact_bytes(body, (SECRET,))


def test_redact_bytes_leaves_a_clean_body_untouched():
    body = b'{"error": {"message": "fine"}}'
    assert redact_bytes(body) is body


def test_an_http_failure_carries_outcome_wait_and_a_redacted_message():
    failure = http_failure(503, Headers({"retry-after": "4"}), f"overloaded for {SECRET}".encode(), (SECRET,))
    seen = (failure.outcome, failure.retryable, failure.status, failure.retry_after)
    assert seen == (Outcome.SERVER_ERROR, True, 503, 4.0)
    assert SECRET not in failure.message and failure.message.startswith("HTTP 503: overloaded for")
    assert http_failure(500, Headers({"retry-after": "4"}), b"").retry_after is None  # only 429 and 503 ask to wait
