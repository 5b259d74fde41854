"""The state DB's memory of supply-chain artifact checks (table referrer_checks), beside StateStore.

A separate accessor over the store's engine, so the image store itself stays as it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from layerfill.oci.referrers import Counts, Memory

from .models import Base, ReferrerCheck
from .store import StateStore

referrer_checks = Base.metadata.tables[ReferrerCheck.__tablename__]
_KEY = ["registry", "repository", "digest"]
COUNT_COLUMNS = ("signatures", "attestations", "sboms", "other", "bytes")


@dataclass(frozen=True)
class ReferrerCheckRow:
    registry: str
    repository: str
    digest: str
    checked_at: datetime
    memory: Memory
    counts: Counts


class ReferrerChecks:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def get(self, registry: str, repository: str, digest: str) -> ReferrerCheckRow | None:
        key = self.store._image_key(registry, repository, digest)
        where = sa.and_(*(referrer_checks.c[k] == v for k, v in key.items()))
        with self.store._read() as conn:
            row = conn.execute(sa.select(referrer_checks).where(where)).first()
        if row is None:
            return None
        m = row._mapping
        counts = Counts(**{c: int(m[c]) for c in COUNT_COLUMNS})
        return ReferrerCheckRow(m["registry"], m["repository"], m["digest"], m["checked_at"],
                                Memory.from_json(m["found"]), counts)  # fmt: skip

    def record(self, registry: str, repository: str, digest: str, memory: Memory, counts: Counts) -> None:
        """Upsert the image's check: now, what was found, and the counts."""
        key = self.store._image_key(registry, repository, digest)
        values: dict[str, Any] = {
            **key,
            "checked_at": self.store._now(),
            "found": memory.to_json(),
            **{c: getattr(counts, c) for c in COUNT_COLUMNS},
        }
        stmt = self.store._insert(referrer_checks).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=_KEY, set_={k: stmt.excluded[k] for k in values if k not in _KEY}
        )
        with self.store._writer.begin() as conn:
            conn.execute(stmt)

    def totals(self) -> dict[str, int]:
        """Artifact counts summed over every checked image, and how many images have at least one signature."""
        sums = [sa.func.coalesce(sa.func.sum(referrer_checks.c[c]), 0) for c in COUNT_COLUMNS]
        signed = sa.func.coalesce(sa.func.sum(sa.case((referrer_checks.c.signatures > 0, 1), else_=0)), 0)
        with self.store._read() as conn:
            row = conn.execute(sa.select(sa.func.count(), signed, *sums)).one()
        return {"images_checked": int(row[0]), "images_signed": int(row[1]),
                **{c: int(v) for c, v in zip(COUNT_COLUMNS, row[2:], strict=True)}}  # fmt: skip
