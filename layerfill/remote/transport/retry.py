"""Retries of transient failures: exponential backoff with full jitter, honouring Retry-After.

Built on tenacity rather than urllib3's `Retry` because urllib3 only sees the request up to the response
headers (a body cut mid-stream happens later, in the caller), its jitter is additive rather than "full
jitter", it sleeps for any Retry-After however long, and after the last attempt it raises instead of
handing back the final response that the client maps to a typed error. tenacity gives one policy object
usable both here (per request) and by the client when it restarts a body read.

Retried: connection errors, timeouts, resets; HTTP 408, 429, 500, 502, 503, 504. A Retry-After (seconds
or HTTP date) on 429/503 replaces the backoff when it is at most `retry_after_max`; a longer one stops
retrying at once so a worker thread is not parked for minutes: the caller gets RateLimited/UpstreamError
with `retry_after` and can schedule the work through its delayed-retry topic instead.
Only GET and HEAD without a body are replayed; anything else is sent once.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_random_exponential,
)

from layerfill.remote.errors import UpstreamError
from layerfill.remote.transport.base import WrappingTransport, discard
from layerfill.remote.transport.redact import get_logger, redact_url

log = get_logger(__name__)

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})
_REPLAYABLE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry. `sleep` is injectable so tests need not wait."""

    max_attempts: int = 5
    backoff_base: float = 0.25
    backoff_max: float = 10.0
    retry_after_max: float = 30.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("backoff_base", "backoff_max", "retry_after_max"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(backoff_max, backoff_base * 2**(attempt-1))]."""
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def retry_after_of(response: Response) -> float | None:
    if response.status_code not in RETRY_AFTER_STATUSES:
        return None
    return parse_retry_after(response.headers.get("Retry-After"))


class RetryTransport(WrappingTransport):
    def __init__(self, inner: BaseAdapter, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner)
        self.policy = policy if policy is not None else RetryPolicy()
        self._jitter = wait_random_exponential(multiplier=self.policy.backoff_base, max=self.policy.backoff_max)

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        if request.method not in _REPLAYABLE_METHODS or request.body:
            return self.inner.send(request, **kwargs)
        retrying = Retrying(
            stop=stop_after_attempt(self.policy.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_is_transient_error) | retry_if_result(self._should_retry_response),
            before_sleep=lambda state: self._before_sleep(request, state),
            sleep=self.policy.sleep,
            # After the last attempt hand back the final response (or raise the final error) untouched.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
            reraise=True,
        )
        return retrying(self.inner.send, request, **kwargs)

    def _should_retry_response(self, response: Response) -> bool:
        if response.status_code not in TRANSIENT_STATUSES:
            return False
        retry_after = retry_after_of(response)
        return retry_after is None or retry_after <= self.policy.retry_after_max

    def _wait(self, state: RetryCallState) -> float:
        outcome = state.outcome
        if outcome is not None and not outcome.failed:
            retry_after = retry_after_of(outcome.result())
            if retry_after is not None:
                return retry_after
        return float(self._jitter(state))

    def _before_sleep(self, request: PreparedRequest, state: RetryCallState) -> None:
        outcome = state.outcome
        if outcome is None:
            return
        if outcome.failed:
            what = str(outcome.exception())
        else:
            response = outcome.result()
            what = f"HTTP {response.status_code}"
            discard(response)  # frees the connection and the concurrency slot before sleeping
        wait = state.next_action.sleep if state.next_action else 0.0
        log.info(
            "retrying %s %s after %s (attempt %d of %d, waiting %.3f s)",
            request.method,
            redact_url(request.url),
            what,
            state.attempt_number,
            self.policy.max_attempts,
            wait,
        )

    def __repr__(self) -> str:
        return f"RetryTransport({self.inner!r}, {self.policy!r})"


def _is_transient_error(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.transient
