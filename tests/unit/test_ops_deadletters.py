"""Dead letters as `layerfill dlq` reads, filters and replays them."""

from __future__ import annotations

import pytest

from layerfill.kafka.deadletter import dlq_headers
from layerfill.ops.deadletters import REPLAYED_FROM, DlqFilter, decode, replay_record
from layerfill.serde import events
from layerfill.serde.codec import EventCodec

pytestmark = pytest.mark.unit

CODEC = EventCodec()
DIGEST = "sha256:" + "b" * 64


def _value(repository: str = "team/app") -> bytes:
    ev = events.manifest_pulled(event_id="e1", source="cli", registry="proxy:5000", repository=repository,
                                digest=DIGEST, occurred_at=events.utc_now())  # fmt: skip
    return CODEC.encode("ManifestPulled", ev, "lf.manifest-pulled")


def _dead(offset: int = 7, *, value: bytes | None = None, error_class: str = "NoRoute", original: str | None = "lf.mp"):
    headers = [("layerfill.retry.attempt", b"2"), *dlq_headers(
        stage="fetcher", error_class=error_class, error_message="no route for proxy:5000/team/app",
        original_topic=original, original_partition=1 if original else None, original_offset=41 if original else None,
        consumer_group="g", attempts=3,
    )]  # fmt: skip
    return decode(CODEC, "lf.dlq", 0, offset, 1_700_000_000_000, b"proxy:5000/team/app",
                  _value() if value is None else value, headers)  # fmt: skip


def test_decode_names_cause_origin_and_event() -> None:
    s = _dead().summary()
    assert s["error_class"] == "NoRoute"
    assert s["original_topic"] == "lf.mp"
    assert (s["original_partition"], s["original_offset"], s["attempts"]) == (1, 41, 3)
    assert (s["record"], s["repository"], s["digest"]) == ("ManifestPulled", "team/app", DIGEST)
    assert s["decode_error"] is None
    assert s["key"] == "proxy:5000/team/app"


def test_undecodable_value_is_kept_with_the_reason() -> None:
    d = _dead(value=b"{not avro}")
    assert d.event is None
    assert d.decode_error is not None and "unknown wire format" in d.decode_error
    assert d.value == b"{not avro}"
    assert d.detail()["value_bytes"] == len(b"{not avro}")


def test_filters() -> None:
    d = _dead(7)
    assert DlqFilter().is_empty
    assert DlqFilter().matches(d)
    assert DlqFilter(from_offset=7, to_offset=7).matches(d)
    assert not DlqFilter(from_offset=8).matches(d)
    assert not DlqFilter(to_offset=6).matches(d)
    assert not DlqFilter(partition=1).matches(d)
    assert DlqFilter(error_class="NoRoute", original_topic="lf.mp").matches(d)
    assert not DlqFilter(error_class="SinkError").matches(d)
    assert DlqFilter(repository_prefix="team/").matches(d)
    assert not DlqFilter(repository_prefix="other/").matches(d)
    assert DlqFilter(contains="no route").matches(d)
    assert not DlqFilter(contains="timeout").matches(d)
    assert not DlqFilter(repository_prefix="team/").matches(_dead(value=b"junk"))


def test_replay_record_restores_key_value_and_own_headers() -> None:
    d = _dead(7)
    rec = replay_record(d)
    assert (rec.topic, rec.key, rec.value) == ("lf.mp", d.key, d.value)
    headers = dict(rec.headers)
    assert headers["layerfill.retry.attempt"] == b"2"  # the original's history stays
    assert headers[REPLAYED_FROM] == b"lf.dlq/0/7"
    assert not [k for k in headers if k.startswith("layerfill.dlq.")]
    with pytest.raises(ValueError, match="no original topic"):
        replay_record(_dead(original=None))


def test_a_cause_quoting_a_lone_surrogate_still_makes_headers() -> None:
    # A message may quote input (JSON "\ud800" escapes decode to lone surrogates): never fail the dead letter.
    headers = dict(dlq_headers(stage="bridge", error_class="InvalidEvent", error_message="bad tag 'a\ud800'"))
    assert headers["layerfill.dlq.error.message"] == b"bad tag 'a\\ud800'"
