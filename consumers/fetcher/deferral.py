"""The watch of a client's pull in progress (I/O around the pure policy in defer.py): look at storage every
`poll_s` until no missing layer is left, or the policy says the client's pull is over."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from layerfill.config.routes import UpstreamCost
from layerfill.sinks.base import Presence, Sink

from .defer import ClientWatch, Decision, Observation

log = logging.getLogger("layerfill.fetcher")


@dataclass(frozen=True)
class WaitOutcome:
    delivered: frozenset[str]  # appeared in storage while we waited: the client's pull brought them
    missing: frozenset[str]  # still absent: to fetch now
    waited: bool
    seconds: float


def _absent(sink: Sink, repository: str, digest: str) -> bool:
    return sink.blob_presence(repository, digest) in (Presence.ABSENT, Presence.UNKNOWN)


def _uploads(sink: Sink, repository: str) -> dict[str, float] | None:
    try:
        return sink.uploads_in_progress(repository)
    except Exception as exc:  # a signal only: without it the watch relies on blobs appearing
        log.warning("could not list uploads in progress", extra={"repository": repository, "error": str(exc)})
        return None


def wait_for_client(
    sink: Sink,
    repository: str,
    digests: Iterable[str],
    policy: UpstreamCost,
    pulled_at: float,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    stopping: Callable[[], bool] = lambda: False,
) -> WaitOutcome:
    wanted = frozenset(digests)
    start = clock()
    watch = ClientWatch(policy, pulled_at, start)
    missing = set(wanted)
    while True:
        now = clock()
        missing = {d for d in missing if _absent(sink, repository, d)}
        uploads = _uploads(sink, repository) if missing and policy.defer_layers else None
        decision = watch.observe(Observation(now, frozenset(missing), uploads))
        if decision is not Decision.WAIT or stopping():
            break
        sleep(watch.next_wait(now))
    return WaitOutcome(wanted - frozenset(missing), frozenset(missing), watch.waited, clock() - start)
