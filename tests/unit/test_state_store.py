"""StateStore behaviour, written once as a contract and run on SQLite here and on PostgreSQL in
tests/integration/test_state_postgres.py (which subclasses StateStoreContract)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from layerfill.oci.reference import InvalidReference
from layerfill.state import (
    BlobKind,
    BlobOutcome,
    BlobRecord,
    ImageStatus,
    ScanState,
    SchemaVersionError,
    StateStore,
    create_state_engine,
    current_revision,
    downgrade,
    head_revision,
    schema_diff,
    upgrade,
)
from layerfill.state.models import Base
from layerfill.state.store import ERROR_MAX, MISSING_SHOWN

pytestmark = pytest.mark.unit

REG = "registry.example:5000"
REPO = "library/debian"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def dg(n: int) -> str:
    """A distinct, valid sha256 digest per integer."""
    return f"sha256:{n:064x}"


IMG = dg(0xA)


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1.0) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def layer(n: int, manifest: str = IMG, *, size: int = 100, outcome: str = "fetched") -> BlobRecord:
    return BlobRecord(dg(n), size, "application/vnd.oci.image.layer.v1.tar+gzip", BlobKind.LAYER, manifest, outcome)


def config(n: int, manifest: str = IMG) -> BlobRecord:
    return BlobRecord(dg(n), 10, "application/vnd.oci.image.config.v1+json", "config", manifest, "linked")


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` for i in range(count) on `count` threads released together; re-raise any failure."""
    start = threading.Barrier(count)

    def task(i: int) -> Any:
        start.wait(timeout=30)
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


class StateStoreContract:
    """Subclasses provide `state_url`: a URL of an empty, never migrated database."""

    @pytest.fixture
    def state_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def store(self, state_url: str, clock: ManualClock) -> Iterator[StateStore]:
        with StateStore(state_url, clock=clock) as store:
            yield store

    @pytest.fixture
    def raw(self, store: StateStore, state_url: str) -> Iterator[sa.Engine]:
        """A plain engine on the migrated database, for checks below the store's API."""
        engine = create_state_engine(state_url)
        yield engine
        engine.dispose()

    # -- migrations ------------------------------------------------------------------------------

    def test_migrations_run_from_scratch_and_match_the_models(self, state_url: str) -> None:
        assert current_revision(state_url) is None
        with StateStore(state_url):
            pass
        assert current_revision(state_url) == head_revision()
        # The programmatic `alembic check`: autogenerate finds nothing to add, drop or alter.
        assert schema_diff(state_url) == []

    def test_diff_reports_a_table_the_migrations_lack(self, state_url: str) -> None:
        upgrade(state_url)
        engine = create_state_engine(state_url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE kv")
        finally:
            engine.dispose()
        diff = schema_diff(state_url)
        assert [(d[0], d[1].name) for d in diff] == [("add_table", "kv")]

    def test_downgrade_to_base_then_upgrade_again(self, state_url: str) -> None:
        upgrade(state_url)
        downgrade(state_url, "base")
        assert current_revision(state_url) is None
        engine = create_state_engine(state_url)
        try:
            assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        finally:
            engine.dispose()
        upgrade(state_url)
        assert schema_diff(state_url) == []

    def test_without_migrations_an_unmigrated_database_is_refused(self, state_url: str) -> None:
        with pytest.raises(SchemaVersionError, match="revision None"):
            StateStore(state_url, migrate=False)
        upgrade(state_url)
        with StateStore(state_url, migrate=False) as store:
            assert store.image_status(REG, REPO, IMG) is None

    def test_concurrent_opens_of_a_fresh_database_migrate_once(self, state_url: str) -> None:
        def open_store(_: int) -> str | None:
            with StateStore(state_url) as store:
                store.set_kv("opened", "yes")
            return current_revision(state_url)

        assert run_threads(4, open_store) == [head_revision()] * 4
        assert schema_diff(state_url) == []

    # -- fast path -------------------------------------------------------------------------------

    def test_unknown_image(self, store: StateStore) -> None:
        assert store.image_status(REG, REPO, IMG) is None
        assert store.is_complete(REG, REPO, IMG) is False

    def test_image_key_is_registry_repository_and_digest(self, store: StateStore) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=0, fetched_bytes=0, blobs=[])
        assert store.is_complete(REG, REPO, IMG)
        assert not store.is_complete("other.example", REPO, IMG)
        assert not store.is_complete(REG, "library/ubuntu", IMG)
        assert not store.is_complete(REG, REPO, dg(0xB))

    def test_recently_complete_lists_complete_images_newest_first_up_to_the_limit(
        self, store: StateStore, clock: ManualClock
    ) -> None:
        for n in (1, 2, 3):
            store.mark_complete(REG, REPO, dg(n), total_bytes=0, fetched_bytes=0, blobs=[])
            clock.advance()
        store.mark_filling(REG, REPO, dg(4), event_id="ev-4")  # not complete: not listed
        store.mark_failed(REG, REPO, dg(5), error="boom", event_id="ev-5")
        assert store.recently_complete(10) == [(REG, REPO, dg(3)), (REG, REPO, dg(2)), (REG, REPO, dg(1))]
        assert store.recently_complete(2) == [(REG, REPO, dg(3)), (REG, REPO, dg(2))]
        assert store.recently_complete(0) == []
        with pytest.raises(ValueError, match="limit"):
            store.recently_complete(-1)

    # -- transitions -----------------------------------------------------------------------------

    def test_mark_filling_inserts_then_counts_attempts(self, store: StateStore, clock: ManualClock) -> None:
        t0 = clock.now
        row = store.mark_filling(REG, REPO, IMG, event_id="ev-1", media_type=OCI_MANIFEST, reference="bookworm")
        assert (row.status, row.attempts, row.last_event_id) == (ImageStatus.FILLING, 1, "ev-1")
        assert (row.media_type, row.reference) == (OCI_MANIFEST, "bookworm")
        assert row.first_seen_at == row.started_at == row.updated_at == t0
        assert (row.total_bytes, row.fetched_bytes, row.blob_count, row.completed_at) == (0, 0, 0, None)

        t1 = clock.advance(5)
        again = store.mark_filling(REG, REPO, IMG, event_id="ev-2")
        assert again.id == row.id
        assert (again.attempts, again.last_event_id) == (2, "ev-2")
        # Not given this time: what was recorded stays.
        assert (again.media_type, again.reference) == (OCI_MANIFEST, "bookworm")
        assert (again.first_seen_at, again.started_at, again.updated_at) == (t0, t1, t1)
        assert store.image_status(REG, REPO, IMG) == again

    def test_mark_complete_records_blobs_in_one_go(self, store: StateStore, clock: ManualClock) -> None:
        store.mark_filling(REG, REPO, IMG, event_id="ev-1")
        done = clock.advance(3)
        records = [config(1), layer(2, outcome="fetched"), layer(3, outcome="present")]
        row = store.mark_complete(REG, REPO, IMG, total_bytes=210, fetched_bytes=100, blobs=records, event_id="ev-9")
        assert row.status is ImageStatus.COMPLETE and row.is_complete
        assert (row.total_bytes, row.fetched_bytes, row.blob_count) == (210, 100, 3)
        assert (row.completed_at, row.updated_at, row.attempts, row.last_event_id) == (done, done, 1, "ev-9")
        assert store.is_complete(REG, REPO, IMG)

        got = {(b.digest, b.kind, b.outcome, b.size, b.manifest_digest) for b in store.image_blobs(REG, REPO, IMG)}
        assert got == {
            (dg(1), BlobKind.CONFIG, BlobOutcome.LINKED, 10, IMG),
            (dg(2), BlobKind.LAYER, BlobOutcome.FETCHED, 100, IMG),
            (dg(3), BlobKind.LAYER, BlobOutcome.PRESENT, 100, IMG),
        }
        totals = store.totals()
        assert (totals["blobs"], totals["blob_bytes"]) == (3, 210)

    def test_complete_replaces_the_blob_list_and_keeps_blobs(self, store: StateStore) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=110, fetched_bytes=110, blobs=[config(1), layer(2)])
        row = store.mark_complete(
            REG, REPO, IMG, total_bytes=110, fetched_bytes=0, blobs=[config(1), layer(3, outcome="linked")]
        )
        assert row.blob_count == 2 and row.attempts == 1
        assert {b.digest for b in store.image_blobs(REG, REPO, IMG)} == {dg(1), dg(3)}
        assert store.totals()["blobs"] == 3  # dg(2) is still in storage, only no longer listed

    def test_blob_shared_by_images_is_stored_once(self, store: StateStore, clock: ManualClock, raw: sa.Engine) -> None:
        first = clock.now
        store.mark_complete(REG, REPO, IMG, total_bytes=100, fetched_bytes=100, blobs=[layer(2)])
        clock.advance(60)
        other = dg(0xB)
        store.mark_complete(REG, "library/ubuntu", other, total_bytes=100, fetched_bytes=0, blobs=[layer(2, other)])
        totals = store.totals()
        assert (totals["blobs"], totals["blob_bytes"]) == (1, 100)
        with raw.connect() as conn:
            stored_at = conn.execute(sa.select(Base.metadata.tables["blobs"].c.first_stored_at)).scalar_one()
        assert stored_at == first

    def test_index_children_share_a_layer(self, store: StateStore) -> None:
        amd64, arm64 = dg(0x100), dg(0x200)
        records = [
            BlobRecord(amd64, 500, OCI_MANIFEST, "manifest", IMG, "fetched"),
            BlobRecord(arm64, 500, OCI_MANIFEST, "manifest", IMG, "fetched"),
            config(1, amd64),
            config(2, arm64),
            layer(3, amd64),
            layer(3, arm64),  # the same layer under both platforms: two entries, one blob
        ]
        row = store.mark_complete(REG, REPO, IMG, total_bytes=1220, fetched_bytes=1220, blobs=records)
        assert row.blob_count == 6
        pairs = {(b.digest, b.manifest_digest) for b in store.image_blobs(REG, REPO, IMG)}
        assert (dg(3), amd64) in pairs and (dg(3), arm64) in pairs
        assert store.totals()["blobs"] == 5

    def test_duplicate_records_are_kept_once(self, store: StateStore) -> None:
        row = store.mark_complete(REG, REPO, IMG, total_bytes=100, fetched_bytes=100, blobs=[layer(2), layer(2)])
        assert row.blob_count == 1
        assert len(store.image_blobs(REG, REPO, IMG)) == 1

    def test_mark_failed_then_retry_then_complete(self, store: StateStore, clock: ManualClock) -> None:
        store.mark_filling(REG, REPO, IMG, event_id="ev-1")
        failed = store.mark_failed(REG, REPO, IMG, error="upstream said 503")
        assert (failed.status, failed.last_error, failed.attempts) == (ImageStatus.FAILED, "upstream said 503", 1)
        assert not store.is_complete(REG, REPO, IMG)

        retry = store.mark_filling(REG, REPO, IMG, event_id="ev-1")
        assert (retry.status, retry.attempts, retry.last_error) == (ImageStatus.FILLING, 2, "upstream said 503")
        done = store.mark_complete(REG, REPO, IMG, total_bytes=1, fetched_bytes=1, blobs=[])
        assert (done.status, done.last_error, done.attempts) == (ImageStatus.COMPLETE, None, 2)

    def test_refilling_a_complete_image_clears_completed_at(self, store: StateStore) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=1, fetched_bytes=1, blobs=[])
        row = store.mark_filling(REG, REPO, IMG, event_id="verify-1")
        assert (row.status, row.completed_at) == (ImageStatus.FILLING, None)
        assert not store.is_complete(REG, REPO, IMG)

    def test_mark_failed_clips_long_errors(self, store: StateStore) -> None:
        row = store.mark_failed(REG, REPO, IMG, error="x" * (ERROR_MAX * 3))
        assert row.last_error is not None and len(row.last_error) == ERROR_MAX
        assert row.last_error.endswith("…")
        assert (row.status, row.attempts) == (ImageStatus.FAILED, 1)

    def test_mark_partial_names_missing_blobs(self, store: StateStore) -> None:
        store.mark_filling(REG, REPO, IMG, event_id="ev-1")
        missing = [dg(i) for i in range(1, MISSING_SHOWN + 4)]
        row = store.mark_partial(REG, REPO, IMG, missing=missing, total_bytes=900, fetched_bytes=300)
        assert row.status is ImageStatus.PARTIAL and not row.is_complete
        assert (row.total_bytes, row.fetched_bytes) == (900, 300)
        assert row.last_error is not None
        assert row.last_error.startswith(f"{len(missing)} blob(s) missing: {dg(1)}, {dg(2)}")
        assert row.last_error.endswith(" and 3 more")
        assert dg(MISSING_SHOWN) in row.last_error and dg(MISSING_SHOWN + 1) not in row.last_error

        kept = store.mark_partial(REG, REPO, IMG, missing=[dg(1)])
        assert (kept.total_bytes, kept.fetched_bytes) == (900, 300)
        assert kept.last_error == f"1 blob(s) missing: {dg(1)}"

    def test_mark_pending(self, store: StateStore) -> None:
        row = store.mark_pending(REG, REPO, IMG, event_id="ev-1", reference="latest")
        assert (row.status, row.attempts, row.started_at, row.reference) == (ImageStatus.PENDING, 0, None, "latest")
        store.mark_failed(REG, REPO, IMG, error="boom")
        assert store.mark_pending(REG, REPO, IMG, event_id="ev-2").status is ImageStatus.PENDING
        store.mark_filling(REG, REPO, IMG, event_id="ev-2")
        assert store.mark_pending(REG, REPO, IMG, event_id="ev-3").status is ImageStatus.FILLING
        store.mark_complete(REG, REPO, IMG, total_bytes=0, fetched_bytes=0, blobs=[])
        row = store.mark_pending(REG, REPO, IMG, event_id="ev-4")
        assert (row.status, row.last_event_id, row.attempts) == (ImageStatus.COMPLETE, "ev-4", 1)

    def test_forget_image_keeps_shared_blobs(self, store: StateStore) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=110, fetched_bytes=110, blobs=[config(1), layer(2)])
        assert store.forget_image(REG, REPO, IMG) is True
        assert store.image_status(REG, REPO, IMG) is None
        assert store.image_blobs(REG, REPO, IMG) == []
        assert store.forget_image(REG, REPO, IMG) is False
        assert store.totals()["blobs"] == 2
        assert store.mark_filling(REG, REPO, IMG, event_id="ev-2").attempts == 1

    # -- listing and totals ----------------------------------------------------------------------

    def test_list_images_filters_and_orders(self, store: StateStore, clock: ManualClock) -> None:
        store.mark_complete(REG, "team_a/app", dg(1), total_bytes=1, fetched_bytes=1, blobs=[])
        clock.advance()
        store.mark_failed(REG, "team_a/api", dg(2), error="e")
        clock.advance()
        store.mark_filling(REG, "teamxa/app", dg(3), event_id="ev")
        clock.advance()
        store.mark_filling("other.example", "team_a/app", dg(4), event_id="ev")

        def digests(**kwargs: Any) -> list[str]:
            return [row.digest for row in store.list_images(**kwargs)]

        assert digests() == [dg(4), dg(3), dg(2), dg(1)]  # most recently updated first
        assert digests(status="filling") == [dg(4), dg(3)]
        assert digests(status=ImageStatus.COMPLETE) == [dg(1)]
        assert digests(status="partial") == []
        # '_' is literal, not LIKE's any-character: teamxa/app does not match.
        assert digests(repository_prefix="team_a/") == [dg(4), dg(2), dg(1)]
        assert digests(repository_prefix="team_a/", registry=REG) == [dg(2), dg(1)]
        assert digests(limit=2) == [dg(4), dg(3)]
        assert digests(limit=2, offset=2) == [dg(2), dg(1)]

    def test_list_images_rejects_bad_arguments(self, store: StateStore) -> None:
        with pytest.raises(ValueError, match=r"invalid status 'done'.*pending, filling"):
            store.list_images(status="done")
        with pytest.raises(ValueError, match="invalid limit 0"):
            store.list_images(limit=0)
        with pytest.raises(ValueError, match="invalid offset -1"):
            store.list_images(offset=-1)

    def test_totals_of_an_empty_database(self, store: StateStore) -> None:
        assert store.totals() == {
            "images": {s.value: 0 for s in ImageStatus},
            "image_count": 0,
            "total_bytes": 0,
            "fetched_bytes": 0,
            "blobs": 0,
            "blob_bytes": 0,
            "scans": {s.value: 0 for s in ScanState},
        }

    def test_totals_count_statuses_bytes_and_scans(self, store: StateStore) -> None:
        store.mark_complete(REG, REPO, dg(1), total_bytes=300, fetched_bytes=200, blobs=[layer(5, dg(1), size=300)])
        store.mark_complete(REG, REPO, dg(2), total_bytes=50, fetched_bytes=0, blobs=[])
        store.mark_filling(REG, REPO, dg(3), event_id="e")
        store.mark_partial(REG, REPO, dg(4), missing=[dg(9)], total_bytes=40, fetched_bytes=10)
        store.record_scan(REG, REPO, dg(1), scanner="clair", state="indexed")
        store.record_scan(REG, REPO, dg(2), scanner="clair", state="pending")
        totals = store.totals()
        assert totals["images"] == {"pending": 0, "filling": 1, "complete": 2, "failed": 0, "partial": 1}
        assert (totals["image_count"], totals["total_bytes"], totals["fetched_bytes"]) == (4, 390, 210)
        assert (totals["blobs"], totals["blob_bytes"]) == (1, 300)
        assert totals["scans"] == {"pending": 1, "indexed": 1, "index_error": 0, "unsupported": 0}

    # -- scans -----------------------------------------------------------------------------------

    def test_scan_attempts_and_timestamps(self, store: StateStore, clock: ManualClock) -> None:
        assert store.scan_for(REG, IMG) is None
        t0 = clock.now
        row = store.record_scan(REG, REPO, IMG, scanner="clair", scanner_version="v4.9.0", state="pending")
        assert (row.state, row.attempts, row.requested_at, row.finished_at) == (ScanState.PENDING, 1, t0, None)

        t1 = clock.advance(30)
        row = store.record_scan(
            REG,
            REPO,
            IMG,
            scanner="clair",
            scanner_version="v4.9.0",
            state=ScanState.INDEXED,
            package_count=120,
            vulnerabilities={"High": 2, "Low": 7},
            report_uri="http://clair/indexer/api/v1/index_report/x",
        )
        # The result completes the pending attempt rather than counting a new one.
        assert (row.state, row.attempts, row.requested_at, row.finished_at) == (ScanState.INDEXED, 1, t0, t1)
        assert (row.package_count, row.vulnerabilities) == (120, {"High": 2, "Low": 7})
        assert store.scan_for(REG, IMG) == row

        t2 = clock.advance(30)
        row = store.record_scan(REG, REPO, IMG, scanner="clair", state="index_error", error="layer fetch failed")
        assert (row.attempts, row.requested_at, row.finished_at) == (2, t2, t2)
        assert (row.error, row.package_count, row.vulnerabilities, row.scanner_version) == (
            "layer fetch failed",
            None,
            None,
            None,
        )

        t3 = clock.advance(30)
        row = store.record_scan(REG, REPO, IMG, scanner="clair", state="pending")
        assert (row.attempts, row.requested_at, row.finished_at, row.error) == (3, t3, None, None)

    def test_scan_is_per_registry_and_manifest(self, store: StateStore) -> None:
        store.record_scan(REG, "library/a", IMG, scanner="clair", state="indexed", package_count=1)
        row = store.record_scan(REG, "library/b", IMG, scanner="clair", state="indexed", package_count=1)
        assert (row.repository, row.attempts) == ("library/b", 2)
        store.record_scan("other.example", "library/a", IMG, scanner="clair", state="unsupported")
        assert store.totals()["scans"]["indexed"] == 1
        assert store.scan_for("other.example", IMG).state is ScanState.UNSUPPORTED  # type: ignore[union-attr]

    def test_record_scan_rejects_bad_input(self, store: StateStore) -> None:
        with pytest.raises(ValueError, match="invalid state 'done'"):
            store.record_scan(REG, REPO, IMG, scanner="clair", state="done")
        with pytest.raises(ValueError, match=r"invalid vulnerabilities\['High'\] -1"):
            store.record_scan(REG, REPO, IMG, scanner="clair", state="indexed", vulnerabilities={"High": -1})
        with pytest.raises(ValueError, match="invalid package_count"):
            store.record_scan(REG, REPO, IMG, scanner="clair", state="indexed", package_count=-3)
        with pytest.raises(ValueError, match="invalid scanner"):
            store.record_scan(REG, REPO, IMG, scanner="", state="indexed")
        with pytest.raises(InvalidReference, match="manifest_digest"):
            store.record_scan(REG, REPO, "sha256:nope", scanner="clair", state="indexed")

    # -- kv --------------------------------------------------------------------------------------

    def test_kv_roundtrip(self, store: StateStore) -> None:
        assert store.get_kv("backfill/cursor") is None
        store.set_kv("backfill/cursor", "1")
        store.set_kv("backfill/cursor", '{"offset": 42}')
        store.set_kv("other", "")
        assert store.get_kv("backfill/cursor") == '{"offset": 42}'
        assert store.get_kv("other") == ""
        assert store.delete_kv("backfill/cursor") is True
        assert store.delete_kv("backfill/cursor") is False
        assert store.get_kv("backfill/cursor") is None
        with pytest.raises(ValueError, match="invalid value for key 'k'"):
            store.set_kv("k", 1)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="invalid key"):
            store.get_kv("")

    # -- blob leases -----------------------------------------------------------------------------

    def test_blob_lease_one_holder_until_it_expires_or_is_released(self, store: StateStore, clock: ManualClock) -> None:
        assert store.acquire_blob_lease(dg(1), "a", 30)
        assert not store.acquire_blob_lease(dg(1), "b", 30)
        assert store.acquire_blob_lease(dg(2), "b", 30)  # another blob is another lease
        assert store.blob_lease_holder(dg(1)) == "a"
        clock.advance(20)
        assert store.renew_blob_lease(dg(1), "a", 30)  # now runs until t0 + 50
        clock.advance(20)
        assert not store.acquire_blob_lease(dg(1), "b", 30)
        clock.advance(11)
        assert store.blob_lease_holder(dg(1)) is None  # expired: a crashed holder blocks the blob no longer
        assert store.acquire_blob_lease(dg(1), "b", 30)
        assert not store.renew_blob_lease(dg(1), "a", 30)  # "a" lost it
        assert not store.release_blob_lease(dg(1), "a")
        assert store.release_blob_lease(dg(1), "b")
        assert store.acquire_blob_lease(dg(1), "c", 30)
        assert store.acquire_blob_lease(dg(1), "c", 30)  # its own lease: renewed

    def test_blob_leases_of_a_previous_run_are_released(self, store: StateStore) -> None:
        assert store.acquire_blob_lease(dg(1), "fetcher-0:aaa", 30)
        assert store.acquire_blob_lease(dg(2), "fetcher-0:bbb", 30)
        assert store.acquire_blob_lease(dg(3), "fetcher-01:ccc", 30)
        assert store.release_blob_leases_of("fetcher-0:") == 2
        assert store.blob_lease_holder(dg(3)) == "fetcher-01:ccc"

    def test_blob_lease_taken_by_exactly_one_of_racing_holders(self, store: StateStore) -> None:
        won = run_threads(8, lambda i: store.acquire_blob_lease(dg(3), f"h{i}", 30))
        assert won.count(True) == 1

    def test_blob_lease_rejects_bad_input(self, store: StateStore) -> None:
        with pytest.raises(InvalidReference):
            store.acquire_blob_lease("sha256:nothex", "a", 30)
        with pytest.raises(ValueError):
            store.acquire_blob_lease(dg(1), "a", 0)
        with pytest.raises(ValueError):
            store.acquire_blob_lease(dg(1), "", 30)

    # -- validation ------------------------------------------------------------------------------

    def test_bad_input_names_the_field(self, store: StateStore) -> None:
        with pytest.raises(InvalidReference, match="invalid digest"):
            store.image_status(REG, REPO, "sha256:abc")
        with pytest.raises(InvalidReference, match="invalid repository"):
            store.is_complete(REG, "Library/Debian", IMG)
        with pytest.raises(InvalidReference, match="invalid registry"):
            store.mark_filling("bad host!", REPO, IMG, event_id="e")
        with pytest.raises(InvalidReference, match="invalid reference"):
            store.mark_filling(REG, REPO, IMG, event_id="e", reference="-bad")
        with pytest.raises(ValueError, match="invalid event_id"):
            store.mark_filling(REG, REPO, IMG, event_id="")
        with pytest.raises(ValueError, match="invalid total_bytes -1"):
            store.mark_complete(REG, REPO, IMG, total_bytes=-1, fetched_bytes=0, blobs=[])
        with pytest.raises(ValueError, match=r"invalid blobs\[1\]: must be a BlobRecord"):
            store.mark_complete(REG, REPO, IMG, total_bytes=0, fetched_bytes=0, blobs=[layer(1), dg(2)])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="invalid error"):
            store.mark_failed(REG, REPO, IMG, error="")
        with pytest.raises(InvalidReference, match=r"invalid missing\[1\]"):
            store.mark_partial(REG, REPO, IMG, missing=[dg(1), "nope"])
        with pytest.raises(ValueError, match="invalid missing"):
            store.mark_partial(REG, REPO, IMG, missing=[])
        # Nothing above wrote anything.
        assert store.totals()["image_count"] == 0

    def test_timestamps_come_back_in_utc(self, state_url: str) -> None:
        plus_two = timezone(timedelta(hours=2))
        local = datetime(2025, 6, 1, 14, 30, 15, 123456, tzinfo=plus_two)
        with StateStore(state_url, clock=lambda: local) as store:
            row = store.mark_filling(REG, REPO, IMG, event_id="e")
            assert row.first_seen_at == local
            assert row.first_seen_at.tzinfo is UTC and row.first_seen_at.hour == 12
            stored = store.image_status(REG, REPO, IMG)
            assert stored is not None and stored.started_at == local and stored.started_at.tzinfo is UTC

    def test_naive_clock_is_refused(self, state_url: str) -> None:
        with (
            StateStore(state_url, clock=lambda: datetime(2025, 1, 1)) as store,
            pytest.raises(ValueError, match="naive"),
        ):
            store.mark_filling(REG, REPO, IMG, event_id="e")

    # -- constraints -----------------------------------------------------------------------------

    def test_constraints_hold_below_the_api(self, store: StateStore, raw: sa.Engine) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=100, fetched_bytes=100, blobs=[layer(2)])
        store.record_scan(REG, REPO, IMG, scanner="clair", state="indexed")
        store.set_kv("k", "v")
        image_id = store.image_status(REG, REPO, IMG).id  # type: ignore[union-attr]
        now = datetime(2025, 1, 1, tzinfo=UTC)
        image = {
            "registry": REG,
            "repository": REPO,
            "digest": IMG,
            "status": "pending",
            "total_bytes": 0,
            "fetched_bytes": 0,
            "blob_count": 0,
            "first_seen_at": now,
            "updated_at": now,
            "attempts": 0,
        }
        link = {"image_id": image_id, "digest": dg(2), "manifest_digest": IMG, "kind": "layer", "outcome": "fetched"}
        scan = {
            "registry": REG,
            "manifest_digest": IMG,
            "repository": "x/y",
            "scanner": "clair",
            "state": "indexed",
            "attempts": 1,
            "requested_at": now,
        }
        # (table, a row the constraint must reject, the same row with only the offending value changed)
        cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
            ("images", image, {**image, "digest": dg(7)}),  # unique (registry, repository, digest)
            ("images", {**image, "digest": dg(7), "status": "bogus"}, {**image, "digest": dg(7)}),
            (
                "blobs",
                {"digest": dg(2), "size": 1, "first_stored_at": now},
                {"digest": dg(7), "size": 1, "first_stored_at": now},
            ),
            ("image_blobs", link, {**link, "manifest_digest": dg(3)}),  # primary key
            ("image_blobs", {**link, "digest": dg(8)}, {**link, "manifest_digest": dg(3)}),  # no such blob
            ("image_blobs", {**link, "manifest_digest": dg(3), "kind": "blob"}, {**link, "manifest_digest": dg(3)}),
            ("image_blobs", {**link, "manifest_digest": dg(3), "outcome": "x"}, {**link, "manifest_digest": dg(3)}),
            ("scans", scan, {**scan, "manifest_digest": dg(7)}),  # primary key (registry, manifest_digest)
            ("scans", {**scan, "manifest_digest": dg(7), "state": "done"}, {**scan, "manifest_digest": dg(7)}),
            ("kv", {"key": "k", "value": "w", "updated_at": now}, {"key": "k2", "value": "w", "updated_at": now}),
        ]
        for table, bad, good in cases:
            # Plain SQL: the ORM types would refuse the bad values before the database sees them.
            def insert(values: dict[str, Any], table: str = table) -> sa.TextClause:
                return sa.text(
                    f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})"
                )

            with raw.connect() as conn:
                conn.execute(insert(good), good)  # the control row goes in, so the failure below is the constraint
                conn.rollback()
            with pytest.raises(IntegrityError), raw.begin() as conn:
                conn.execute(insert(bad), bad)

    # -- concurrency -----------------------------------------------------------------------------

    def test_concurrent_mark_filling_of_one_image(self, store: StateStore) -> None:
        threads, rounds = 8, 10

        def work(i: int) -> None:
            for n in range(rounds):
                store.mark_filling(REG, REPO, IMG, event_id=f"ev-{i}-{n}")
                store.image_status(REG, REPO, IMG)

        run_threads(threads, work)
        row = store.image_status(REG, REPO, IMG)
        assert row is not None and row.attempts == threads * rounds
        assert store.totals()["image_count"] == 1

    def test_concurrent_completions_with_shared_blobs(self, store: StateStore) -> None:
        threads = 8
        shared = list(range(1, 31))

        def work(i: int) -> None:
            image = dg(0x1000 + i % 4)  # two threads complete each image, racing on its blob list
            numbers = [*shared, 100 + i % 4]
            random.Random(i).shuffle(numbers)  # lock order must not matter
            for _ in range(10):
                store.mark_filling(REG, REPO, image, event_id=f"ev-{i}")
                store.mark_complete(
                    REG,
                    REPO,
                    image,
                    total_bytes=600,
                    fetched_bytes=0,
                    blobs=[layer(n, image) for n in numbers],
                )
                store.image_status(REG, REPO, image)

        run_threads(threads, work)
        for k in range(4):
            image = dg(0x1000 + k)
            assert {b.digest for b in store.image_blobs(REG, REPO, image)} == {dg(n) for n in [*shared, 100 + k]}
            row = store.image_status(REG, REPO, image)
            assert row is not None and row.status is ImageStatus.COMPLETE and row.attempts == 20
        assert store.totals()["blobs"] == len(shared) + 4

    def test_concurrent_forget_and_complete(self, store: StateStore) -> None:
        def work(i: int) -> None:
            for _ in range(50):
                if i % 2:
                    store.mark_complete(REG, REPO, IMG, total_bytes=1, fetched_bytes=1, blobs=[layer(1), layer(2)])
                else:
                    store.forget_image(REG, REPO, IMG)

        run_threads(4, work)
        store.mark_complete(REG, REPO, IMG, total_bytes=1, fetched_bytes=1, blobs=[layer(3)])
        assert [b.digest for b in store.image_blobs(REG, REPO, IMG)] == [dg(3)]

    def test_two_stores_on_one_database(self, state_url: str, clock: ManualClock) -> None:
        """Separate engines, as the bridge, fetcher and status CLI processes would have."""
        with StateStore(state_url, clock=clock) as a, StateStore(state_url, clock=clock) as b:

            def work(i: int) -> None:
                store = a if i % 2 else b
                for n in range(10):
                    store.mark_filling(REG, REPO, dg(n), event_id=f"ev-{i}")
                    store.set_kv(f"cursor-{i}", str(n))

            run_threads(4, work)
            assert [a.image_status(REG, REPO, dg(n)).attempts for n in range(10)] == [4] * 10  # type: ignore[union-attr]
            assert [b.get_kv(f"cursor-{i}") for i in range(4)] == ["9"] * 4


class TestSqliteStateStore(StateStoreContract):
    @pytest.fixture
    def state_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'state' / 'layerfill.db'}"
