"""The logs-API source's checkpoint and the choice of which entries are new. Pure: no I/O.

The logs API has no entry ids and no cursor that survives a restart, and its time filter is by day. So the
source reads, newest first, every entry down to `newest - lookback` and keeps the keys of the entries it has
published within that window: an entry is new when its key is not among them and it is not older than the
window (or than `floor`, where the source first started). A pull whose log row commits up to `lookback`
seconds after a later one is still found; one later than that would be missed (Quay writes the row inside the
pull's request, so this takes a request stalled that long between its log write and its commit)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True)
class Checkpoint:
    floor: datetime  # nothing older is ever published (the first start)
    newest: datetime  # the newest entry seen so far
    seen: dict[str, float] = field(default_factory=dict)  # entry key -> its time (epoch s), within the window

    def window_start(self, lookback_s: float) -> datetime:
        return max(self.floor, self.newest - timedelta(seconds=lookback_s))

    def dumps(self) -> bytes:
        return json.dumps(
            {"floor": self.floor.isoformat(), "newest": self.newest.isoformat(), "seen": self.seen},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> Checkpoint:
        doc = json.loads(data)
        return cls(
            floor=datetime.fromisoformat(doc["floor"]),
            newest=datetime.fromisoformat(doc["newest"]),
            seen={str(k): float(v) for k, v in doc["seen"].items()},
        )

    @classmethod
    def start(cls, now: datetime | None = None) -> Checkpoint:
        at = (now or datetime.now(UTC)).replace(microsecond=0)
        return cls(floor=at, newest=at)


def select_new(
    entries: list[tuple[str, datetime]], ckpt: Checkpoint, lookback_s: float
) -> tuple[list[int], Checkpoint]:
    """Indexes of the entries (key, time) that are new, and the checkpoint once they are published."""
    start = ckpt.window_start(lookback_s)
    new: list[int] = []
    seen = dict(ckpt.seen)
    newest = ckpt.newest
    for i, (key, when) in enumerate(entries):
        if when < start or when < ckpt.floor or key in seen:
            continue
        new.append(i)
        seen[key] = when.timestamp()
        newest = max(newest, when)
    cutoff = max(ckpt.floor, newest - timedelta(seconds=lookback_s)).timestamp()
    kept = {k: t for k, t in seen.items() if t >= cutoff}
    return new, Checkpoint(floor=ckpt.floor, newest=newest, seen=kept)
