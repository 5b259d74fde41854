"""Retry-topic bookkeeping (pure): how many attempts an event has had, when it is due again, and whether the
next failure sends it back to the retry topic or to the dead-letter topic. Shared by every consumer stage."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

ATTEMPT = "layerfill.retry.attempt"
DUE_MS = "layerfill.retry.due_ms"
ERROR = "layerfill.retry.last_error"


@dataclass(frozen=True)
class RetryInfo:
    attempt: int  # topic-level attempts already made (0 for a fresh event)
    due_ms: int  # epoch ms before which the event must not be processed again (0 = now)


def read_retry_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> RetryInfo:
    attempt, due = 0, 0
    for k, v in headers or ():
        try:
            if k == ATTEMPT:
                attempt = max(0, int((v or b"0").decode()))
            elif k == DUE_MS:
                due = max(0, int((v or b"0").decode()))
        except ValueError:
            continue  # a mangled header must not wedge the partition: treat it as due now
    return RetryInfo(attempt, due)


def next_step(
    info: RetryInfo, delays_s: Sequence[float], now_ms: int, jitter: float = 0.1, not_before_s: float = 0.0
) -> RetryInfo | None:
    """The retry to schedule after a failed attempt, or None when the retries are used up (dead-letter).
    `not_before_s` is a pause the other side asked for (Retry-After): the retry is never due sooner."""
    if info.attempt >= len(delays_s):
        return None
    delay = max(delays_s[info.attempt] * (1 + random.uniform(-jitter, jitter)), not_before_s)
    return RetryInfo(info.attempt + 1, now_ms + int(delay * 1000))


def retry_headers(
    step: RetryInfo, error: str, carried: Sequence[tuple[str, bytes | None]] | None
) -> list[tuple[str, bytes]]:
    keep = [(k, v or b"") for k, v in carried or () if k not in (ATTEMPT, DUE_MS, ERROR)]
    return [
        *keep,
        (ATTEMPT, str(step.attempt).encode()),
        (DUE_MS, str(step.due_ms).encode()),
        (ERROR, error[:1000].encode("utf-8", "backslashreplace")),  # as dlq_headers: an error may quote input
    ]


MAX_IN_PROCESS_PAUSE_S = 5.0  # longer pauses hand the event to the retry topic rather than hold a worker


def in_process_pause(attempt: int, retry_after_s: float = 0.0) -> float | None:
    """The pause after failed in-process attempt `attempt` (1, 2, ...): 0.5 s doubling up to
    MAX_IN_PROCESS_PAUSE_S, never shorter than the other side's Retry-After. None when that Retry-After is
    longer than a worker should be held: the event then waits on the retry topic."""
    pause = max(min(0.5 * 2 ** (attempt - 1), MAX_IN_PROCESS_PAUSE_S), retry_after_s)
    return None if pause > MAX_IN_PROCESS_PAUSE_S else pause
