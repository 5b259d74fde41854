"""The state store's checkpoints: small values by key (resume positions of backfills and audits, ...)."""

from __future__ import annotations

import sqlalchemy as sa

from .base import StoreBase, kv
from .records import check_text


class Checkpoints(StoreBase):
    # -- checkpoints -----------------------------------------------------------------------------

    def get_kv(self, key: str) -> str | None:
        key_ = check_text(key, "key")
        with self._read() as conn:
            return conn.execute(sa.select(kv.c.value).where(kv.c.key == key_)).scalar()

    def set_kv(self, key: str, value: str) -> None:
        key_ = check_text(key, "key")
        if not isinstance(value, str):
            raise ValueError(f"invalid value for key {key_!r}: must be a string, got {type(value).__name__}")
        now = self._now()
        stmt = self._insert(kv).values(key=key_, value=value, updated_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
        with self._writer.begin() as conn:
            conn.execute(stmt)

    def delete_kv(self, key: str) -> bool:
        key_ = check_text(key, "key")
        with self._writer.begin() as conn:
            return conn.execute(sa.delete(kv).where(kv.c.key == key_)).rowcount > 0
