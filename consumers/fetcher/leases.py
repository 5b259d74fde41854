"""One upstream GET per blob across the whole consumer group: a lease per blob digest in the state DB.

The fetcher that takes the lease fetches; the others wait until the blob is in storage (then they only link it)
or the lease is free again (then one of them takes it). A holder renews its leases every third of their TTL while
the transfer runs, so a large blob keeps its lease; a crashed holder stops renewing and its lease expires after
the TTL at most. If the state DB is unreachable the fetcher fetches without a lease: a second fetch costs bytes,
a fill blocked on the database would cost the image."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from layerfill.state.store import StateStore

log = logging.getLogger("layerfill.fetcher")

T = TypeVar("T")
MAX_DB_FAILURES = 3  # consecutive state DB errors before a blob is fetched without a lease


class BlobLeases:
    def __init__(self, store: StateStore, instance_id: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.instance_id = instance_id
        self._sleep = sleep
        self._held: dict[tuple[str, str], float] = {}  # (digest, holder) -> ttl
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # instance_id is unique per process and stable across its restarts: leases under it were held by this
        # process's previous life, which is over. Without this a restart after a crash would wait out their TTL.
        try:
            dropped = store.release_blob_leases_of(f"{self._prefix}:")
            if dropped:
                log.info("released blob leases of this instance's previous run", extra={"leases": dropped})
        except Exception as exc:
            log.warning("could not release this instance's old blob leases", extra={"error": str(exc)})

    @property
    def _prefix(self) -> str:
        return self.instance_id[:200]

    def _holder(self) -> str:
        return f"{self._prefix}:{uuid.uuid4().hex[:12]}"

    def exclusive(
        self,
        digest: str,
        ttl_s: float,
        poll_s: float,
        *,
        stored: Callable[[], bool],
        fetch: Callable[[], T],
        link: Callable[[], T],
        waited: Callable[[], None] | None = None,
    ) -> T:
        """`link()` once the blob is in storage; else `fetch()` under the lease, taken when free."""
        holder = self._holder()
        announced = False
        failures = 0
        while True:
            if stored():
                return link()
            try:
                acquired = self.store.acquire_blob_lease(digest, holder, ttl_s)
                failures = 0
            except Exception as exc:  # a busy SQLite file, a PostgreSQL failover: try a few times, then go on
                failures += 1
                if failures >= MAX_DB_FAILURES:
                    log.warning("blob lease unavailable, fetching without one",
                                extra={"digest": digest, "error": str(exc)})  # fmt: skip
                    return fetch()
                self._sleep(poll_s)
                continue
            if acquired:
                self._hold(digest, holder, ttl_s)
                try:
                    # The previous holder may have stored it between our look and its release.
                    return link() if stored() else fetch()
                finally:
                    self._release(digest, holder)
            if not announced and waited is not None:
                waited()
                announced = True
            self._sleep(poll_s)

    # -- renewal -----------------------------------------------------------------------------------

    def _hold(self, digest: str, holder: str, ttl_s: float) -> None:
        with self._lock:
            self._held[(digest, holder)] = ttl_s
            if self._renewer is None:
                self._renewer = threading.Thread(target=self._renew_loop, name="blob-leases", daemon=True)
                self._renewer.start()

    def _release(self, digest: str, holder: str) -> None:
        with self._lock:
            self._held.pop((digest, holder), None)
        try:
            self.store.release_blob_lease(digest, holder)
        except Exception as exc:  # it expires by itself
            log.warning("could not release a blob lease", extra={"digest": digest, "error": str(exc)})

    def _renew_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                held = dict(self._held)
            shortest = min(held.values(), default=30.0)
            for (digest, holder), ttl in held.items():
                try:
                    self.store.renew_blob_lease(digest, holder, ttl)
                except Exception as exc:
                    log.warning("could not renew a blob lease", extra={"digest": digest, "error": str(exc)})
            self._stop.wait(max(0.5, shortest / 3))

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
