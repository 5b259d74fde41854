from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from layerfill import schemas
from layerfill.serde import EventCodec
from layerfill.serde import events as ev

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_event_id_is_a_deterministic_uuid5() -> None:
    first = ev.event_id("manifest-pulled", "distribution", "notification-1")
    assert first == ev.event_id("manifest-pulled", "distribution", "notification-1")
    assert uuid.UUID(first).version == 5


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("manifest-pulled", "n-1"), ("manifest-pulled", "n-2")),
        (("manifest-pulled", "n-1"), ("image-cached", "n-1")),
        # Joining parts naively would make these collide.
        (("k", "a/b", "c"), ("k", "a", "b/c")),
        (("k", "a,b"), ("k", "a", "b")),
    ],
)
def test_event_ids_differ_for_different_keys(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert ev.event_id(*a) != ev.event_id(*b)


def test_event_id_needs_a_key() -> None:
    with pytest.raises(ValueError, match="natural key"):
        ev.event_id("manifest-pulled")


def test_enum_constants_come_from_the_schemas() -> None:
    assert ev.SOURCES[:6] == ("distribution", "harbor", "quay", "library", "cli", "backfill")
    assert ev.BLOB_KINDS[:3] == ("manifest", "config", "layer")
    assert ev.CACHE_OUTCOMES[:3] == ("fetched", "linked", "present")
    assert ev.SCAN_STATES[:3] == ("indexed", "index_error", "unsupported")
    assert ev.SKIP_REASONS[:2] == ("foreign_layer", "platform_excluded")


def _all_events() -> dict[str, dict]:
    pulled = ev.manifest_pulled(
        event_id=ev.event_id("manifest-pulled", "cli", "x"),
        source="cli",
        registry="cache:5000",
        repository="library/alpine",
        digest=DIGEST,
        occurred_at=WHEN,
    )
    layer = ev.layer_cached(
        caused_by=pulled["event_id"],
        registry="cache:5000",
        repository="library/alpine",
        manifest_digest=DIGEST,
        digest="sha256:" + "cd" * 32,
        size=10,
        media_type="application/vnd.oci.image.layer.v1.tar+gzip",
        kind="layer",
        outcome="fetched",
        bytes_fetched=10,
    )
    image = ev.image_cached(
        caused_by=pulled["event_id"],
        registry="cache:5000",
        repository="library/alpine",
        digest=DIGEST,
        media_type="application/vnd.oci.image.index.v1+json",
        manifests=[
            ev.cached_manifest(
                digest="sha256:" + "ef" * 32,
                media_type="application/vnd.oci.image.manifest.v1+json",
                config=ev.blob_ref("sha256:" + "01" * 32, 5, "application/vnd.oci.image.config.v1+json"),
                layers=iter([ev.blob_ref("sha256:" + "cd" * 32, 10, "application/vnd.oci.image.layer.v1.tar")]),
                platform=ev.platform("linux", "amd64"),
            )
        ],
        skipped=[ev.skipped_item("sha256:" + "99" * 32, "platform_excluded", "windows/amd64")],
        total_bytes=15,
        fetched_bytes=10,
        started_at=WHEN,
    )
    scanned = ev.image_scanned(
        caused_by=image["event_id"],
        registry="cache:5000",
        repository="library/alpine",
        digest="sha256:" + "ef" * 32,
        scanner="clair",
        state="indexed",
        packages=14,
        vulnerabilities=ev.vulnerability_counts(high=2, low=1),
    )
    return {"ManifestPulled": pulled, "LayerCached": layer, "ImageCached": image, "ImageScanned": scanned}


def test_builders_cover_every_schema_and_encode() -> None:
    built = _all_events()
    assert sorted(built) == schemas.schema_names()
    codec = EventCodec()
    for record, value in built.items():
        assert codec.decode(codec.encode(record, value, "t")) == (record, value)


def test_derived_event_ids_are_stable_per_cause() -> None:
    first, second = _all_events(), _all_events()
    for record in ("LayerCached", "ImageCached", "ImageScanned"):
        assert first[record]["event_id"] == second[record]["event_id"]
    assert first["LayerCached"]["event_id"] != first["ImageCached"]["event_id"]


def test_timestamps_default_to_now_at_millisecond_precision() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    value = _all_events()["LayerCached"]["occurred_at"]
    assert value.tzinfo is not None and value > before
    assert value.microsecond % 1000 == 0
    assert ev.utc_now().microsecond % 1000 == 0


def test_aware_timestamps_in_other_zones_are_kept() -> None:
    cest = datetime(2026, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    value = ev.manifest_pulled(
        event_id="e", source="cli", registry="r", repository="p", digest=DIGEST, occurred_at=cest
    )
    codec = EventCodec()
    decoded = codec.decode(codec.encode("ManifestPulled", value, "t"))[1]
    assert decoded["occurred_at"] == cest


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: ev.manifest_pulled(
                event_id="e",
                source="cli",
                registry="r",
                repository="p",
                digest=DIGEST,
                occurred_at=datetime(2026, 1, 1),
            ),
            "occurred_at must be a timezone-aware datetime",
        ),
        (
            lambda: ev.manifest_pulled(event_id="e", source="docker", registry="r", repository="p", digest=DIGEST),
            "source must be one of distribution",
        ),
        (lambda: ev.blob_ref(DIGEST, -1, "m"), "size must be a non-negative integer"),
        (lambda: ev.skipped_item(DIGEST, "too_big"), "reason must be one of foreign_layer"),
        (lambda: ev.vulnerability_counts(high=True), "vulnerabilities.high must be a non-negative integer"),
    ],
)
def test_builders_reject_bad_input_naming_the_field(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_image_cached_carries_referrer_counts_and_defaults_to_none() -> None:
    image = _all_events()["ImageCached"]
    assert image["referrers"] is None
    counted = {**image, "referrers": ev.referrer_counts(signatures=2, sboms=1, bytes=4096, skipped=1)}
    codec = EventCodec()
    assert codec.decode(codec.encode("ImageCached", counted, "t"))[1]["referrers"] == {
        "signatures": 2, "attestations": 0, "sboms": 1, "other": 0, "bytes": 4096, "skipped": 1, "error": None,
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"referrers\.signatures"):
        ev.referrer_counts(signatures=-1)
