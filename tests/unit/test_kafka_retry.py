"""Retry-topic bookkeeping: attempts, due times, and an upstream's Retry-After never shortened."""

from __future__ import annotations

import pytest

from layerfill.kafka.retry import RetryInfo, next_step, read_retry_headers, retry_headers

pytestmark = pytest.mark.unit


def test_next_step_uses_the_configured_delay_per_attempt() -> None:
    step = next_step(RetryInfo(0, 0), [2, 30], now_ms=1_000_000, jitter=0)
    assert step == RetryInfo(1, 1_002_000)
    step = next_step(RetryInfo(1, 0), [2, 30], now_ms=1_000_000, jitter=0)
    assert step == RetryInfo(2, 1_030_000)
    assert next_step(RetryInfo(2, 0), [2, 30], now_ms=1_000_000) is None  # used up: dead-letter


def test_retry_after_longer_than_the_delay_wins() -> None:
    step = next_step(RetryInfo(0, 0), [2, 30], now_ms=0, jitter=0, not_before_s=120)
    assert step == RetryInfo(1, 120_000)


def test_retry_after_shorter_than_the_delay_changes_nothing() -> None:
    assert next_step(RetryInfo(1, 0), [2, 30], now_ms=0, jitter=0, not_before_s=1) == RetryInfo(2, 30_000)


def test_headers_round_trip_and_mangled_headers_mean_due_now() -> None:
    hdrs = retry_headers(RetryInfo(2, 42), "boom", [("keep", b"x"), ("layerfill.retry.attempt", b"1")])
    assert read_retry_headers(hdrs) == RetryInfo(2, 42)
    assert ("keep", b"x") in hdrs
    assert read_retry_headers([("layerfill.retry.attempt", b"nope"), ("layerfill.retry.due_ms", b"-5")]) == RetryInfo(
        0, 0
    )


def test_an_error_quoting_a_lone_surrogate_still_makes_headers() -> None:
    hdrs = dict(retry_headers(RetryInfo(1, 0), "bad 'a\ud800'", None))
    assert hdrs["layerfill.retry.last_error"] == b"bad 'a\\ud800'"
