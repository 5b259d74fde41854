"""Whether to keep waiting for a client's pull to bring a missing layer into the cache (pure: no I/O, no clock).

Why wait at all: a ManifestPulled reaches the fetcher within ~0.1 s of the client's manifest GET, while the
client is only starting to GET the layers it lacks through the proxy. distribution's proxy streams each such
layer from the upstream and stores it as it goes; a second GET of the same layer while that runs goes upstream
again, unstored. Fetching a layer the client is getting would double its upstream bytes. So, for each layer
missing from storage, the fetcher watches storage and waits while the client's pull still makes progress:

- progress = a missing layer appeared in storage, or an upload is open in the repository (distribution stores
  what its proxy serves through `_uploads/<id>/`), started no longer than `upload_stale_s` ago;
- until any progress is seen, the client gets `grace_s` from its manifest pull to start;
- once it has started, `idle_s` of quiet after the last progress means the pull is over: what is still missing is
  a layer the client skipped (it had it) or abandoned, and is fetched now;
- never longer than `max_wait_s` in all.

The proxy's blob `pull` notification is not used: it is sent when the blob has been served, the moment its data
appears in storage, which the watch sees anyway, without a second event stream.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from layerfill.config.routes import UpstreamCost


class Decision(enum.Enum):
    DONE = "done"  # nothing is missing any more
    WAIT = "wait"  # the client's pull is still progressing (or may still start)
    FETCH = "fetch"  # stop waiting: fetch what is still missing


@dataclass(frozen=True)
class Observation:
    at: float  # wall clock, epoch seconds
    missing: frozenset[str]  # digests still absent from storage
    uploads: Mapping[str, float] | None  # open upload id -> started (epoch s); None: the sink cannot see them


@dataclass
class ClientWatch:
    policy: UpstreamCost
    pulled_at: float  # the client's manifest pull (the event's occurred_at), epoch seconds
    started_at: float  # when the fetcher began watching
    last_progress: float | None = None
    _missing: frozenset[str] | None = None
    waited: bool = False  # WAIT was answered at least once

    def observe(self, obs: Observation) -> Decision:
        if not obs.missing:
            return Decision.DONE
        if self._progressed(obs):
            self.last_progress = obs.at
        self._missing = obs.missing
        decision = self._decide(obs.at)
        self.waited = self.waited or decision is Decision.WAIT
        return decision

    def _progressed(self, obs: Observation) -> bool:
        if self._missing is not None and obs.missing < self._missing:
            return True
        return any(obs.at - started < self.policy.upload_stale_s for started in (obs.uploads or {}).values())

    def _decide(self, now: float) -> Decision:
        p = self.policy
        if not p.defer_layers or now - self.started_at >= p.max_wait_s:
            return Decision.FETCH
        if self.last_progress is not None:  # the client has started: quiet for idle_s means it is done
            quiet_from = self.last_progress + p.idle_s
        else:
            quiet_from = min(self.pulled_at, now) + p.grace_s
        return Decision.WAIT if now < quiet_from else Decision.FETCH

    def next_wait(self, now: float) -> float:
        """Seconds to sleep before the next look: the poll interval, not past the overall bound."""
        left = self.started_at + self.policy.max_wait_s - now
        return max(0.0, min(self.policy.poll_s, left))
