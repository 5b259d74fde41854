"""The CNCF distribution envelope parser: which registry events become ManifestPulled, which are ignored
(and counted), which are dead-lettered (with a reason naming the field), and event_id stability."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfill.oci import mediatypes
from layerfill.producers.distribution import parse_envelope
from layerfill.producers.pull_event import MalformedBody
from tests.support.notifications import distribution_event, envelope, fake_digest

pytestmark = pytest.mark.unit


def test_get_by_tag_becomes_one_event_with_all_fields() -> None:
    raw = distribution_event(repository="team/app", tag="1.2", method="GET", host="cache.example:5000")
    parsed = parse_envelope(envelope(raw))
    assert parsed.invalid == [] and parsed.ignored == {}
    (ev,) = parsed.events
    assert ev.source == "distribution"
    assert ev.registry == "cache.example:5000"
    assert ev.repository == "team/app"
    assert ev.reference == "1.2"
    assert ev.digest == raw["target"]["digest"]
    assert ev.media_type == mediatypes.OCI_MANIFEST
    assert ev.occurred_at == datetime(2026, 11, 28, 4, 38, 3, 627000, tzinfo=UTC)


def test_head_counts_like_get() -> None:
    get = parse_envelope(envelope(distribution_event(method="GET", event_id="a"))).events
    head = parse_envelope(envelope(distribution_event(method="HEAD", event_id="b"))).events
    assert len(get) == len(head) == 1
    assert (get[0].digest, get[0].repository) == (head[0].digest, head[0].repository)
    # Separate registry requests are separate events: only a redelivery shares an event_id.
    assert get[0].event_id != head[0].event_id


def test_pull_by_digest_has_no_reference() -> None:
    (ev,) = parse_envelope(envelope(distribution_event(tag=None))).events
    assert ev.reference is None


@pytest.mark.parametrize(
    "media_type",
    [
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        mediatypes.OCI_INDEX + "; charset=utf-8",
    ],
)
def test_manifest_and_index_types_become_events(media_type: str) -> None:
    (ev,) = parse_envelope(envelope(distribution_event(media_type=media_type))).events
    assert ev.media_type == media_type


@pytest.mark.parametrize(
    ("media_type", "reason"),
    [
        ("application/octet-stream", "blob"),
        (mediatypes.OCI_LAYER_GZIP, "blob"),
        (mediatypes.OCI_CONFIG, "blob"),
        (mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST, "schema1-manifest"),
    ],
)
def test_blob_and_schema1_pulls_are_ignored_and_counted(media_type: str, reason: str) -> None:
    body = envelope(*(distribution_event(media_type=media_type) for _ in range(3)))
    parsed = parse_envelope(body)
    assert parsed.events == [] and parsed.invalid == []
    assert parsed.ignored == {reason: 3}


def test_blob_pull_without_media_type_is_ignored() -> None:
    raw = distribution_event()
    del raw["target"]["mediaType"]
    assert parse_envelope(envelope(raw)).ignored == {"blob": 1}


@pytest.mark.parametrize("action", ["push", "mount", "delete"])
def test_other_actions_are_ignored_and_counted(action: str) -> None:
    parsed = parse_envelope(envelope(distribution_event(action=action), distribution_event(action=action)))
    assert parsed.events == [] and parsed.invalid == []
    assert parsed.ignored == {f"action:{action}": 2}


def test_mixed_envelope_accounts_for_every_event() -> None:
    """A 2.8-style batch: each event lands in exactly one of events / ignored / invalid."""
    body = envelope(
        distribution_event(repository="a/one", tag="1"),
        distribution_event(media_type="application/octet-stream"),
        distribution_event(action="push"),
        distribution_event(repository="Bad/Upper"),
        distribution_event(repository="a/two", media_type=mediatypes.OCI_INDEX),
    )
    parsed = parse_envelope(body)
    assert [e.repository for e in parsed.events] == ["a/one", "a/two"]
    assert parsed.ignored == {"blob": 1, "action:push": 1}
    assert len(parsed.invalid) == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda ev: ev["target"].update(repository="Upper/Case"), "target.repository"),
        (lambda ev: ev["target"].update(repository="a/../etc"), "target.repository"),
        (lambda ev: ev["target"].update(repository=""), "target.repository"),
        (lambda ev: ev["target"].update(repository=7), "target.repository"),
        (lambda ev: ev["target"].pop("repository"), "target.repository"),
        (lambda ev: ev["target"].update(digest="sha256:abc"), "target.digest"),
        (lambda ev: ev["target"].update(digest="md5:" + "0" * 32), "target.digest"),
        (lambda ev: ev["target"].update(digest="SHA256:" + "A" * 64), "target.digest"),
        (lambda ev: ev["target"].pop("digest"), "target.digest"),
        (lambda ev: ev["target"].update(tag="-bad"), "target.tag"),
        (lambda ev: ev["target"].update(tag="x" * 129), "target.tag"),
        (lambda ev: ev["target"].update(tag=["1"]), "target.tag"),
        (lambda ev: ev.pop("id"), "event.id"),
        (lambda ev: ev.update(id=12), "event.id"),
        (lambda ev: ev["request"].update(host="bad host"), "request.host"),
        (lambda ev: ev["request"].pop("host"), "request.host"),
        (lambda ev: ev.update(request="nope"), "request.host"),
        (lambda ev: ev["target"].update(mediaType=5), "target.mediaType"),
        (lambda ev: ev.update(target=[]), "event.target"),
    ],
)
def test_invalid_pull_events_are_dead_lettered_with_a_reason_naming_the_field(mutate, field: str) -> None:
    raw = distribution_event(tag="1")
    mutate(raw)
    good = distribution_event(repository="still/published")
    parsed = parse_envelope(envelope(raw, good))
    assert [e.repository for e in parsed.events] == ["still/published"]
    (bad,) = parsed.invalid
    assert field in bad.reason
    assert bad.raw == raw  # the original event, for the dead-letter record


@pytest.mark.parametrize("raw", [None, 1, "pull", [], True])
def test_an_event_that_is_not_an_object_is_dead_lettered(raw) -> None:
    parsed = parse_envelope(json.dumps({"events": [raw]}).encode())
    assert len(parsed.invalid) == 1 and "event must be an object" in parsed.invalid[0].reason


def test_event_id_is_stable_across_redelivery() -> None:
    raw = distribution_event(tag="1")
    first = parse_envelope(envelope(raw)).events[0]
    # Redelivered alone, or batched with other events (2.8 batches), it is the same event.
    again = parse_envelope(envelope(raw)).events[0]
    batched = parse_envelope(envelope(distribution_event(), raw)).events[1]
    assert first.event_id == again.event_id == batched.event_id
    other = parse_envelope(envelope(distribution_event(tag="1"))).events[0]
    assert other.event_id != first.event_id


def test_registry_name_overrides_request_host() -> None:
    raw = distribution_event(host="10.0.0.5:5000")
    (ev,) = parse_envelope(envelope(raw), "cache.example.com").events
    assert ev.registry == "cache.example.com"
    raw["request"].pop("host")
    assert parse_envelope(envelope(raw), "cache.example.com").events[0].registry == "cache.example.com"


@pytest.mark.parametrize(
    "timestamp",
    [None, 5, "yesterday", "2026-11-28T04:38:03", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"],
)
def test_an_odd_timestamp_does_not_lose_the_event(timestamp) -> None:
    raw = distribution_event()
    raw["timestamp"] = timestamp
    (ev,) = parse_envelope(envelope(raw)).events
    assert abs(ev.occurred_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert ev.occurred_at.microsecond % 1000 == 0


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    raw = distribution_event(timestamp="2026-11-28T06:38:03.5+02:00")
    (ev,) = parse_envelope(envelope(raw)).events
    assert ev.occurred_at == datetime(2026, 11, 28, 4, 38, 3, 500000, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"events": [',
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b'"events"',
        b"{}",
        b'{"events": {}}',
        b'{"events": "pull"}',
        b'{"events": null}',
    ],
)
def test_malformed_bodies_raise_malformed_body(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_envelope(body)


def test_empty_events_array_is_accepted() -> None:
    parsed = parse_envelope(b'{"events": []}')
    assert parsed.events == [] and parsed.invalid == [] and parsed.ignored == {}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=5))
def test_arbitrary_events_are_each_accounted_for(raws: list) -> None:
    parsed = parse_envelope(json.dumps({"events": raws}).encode())
    assert len(parsed.events) + len(parsed.invalid) + sum(parsed.ignored.values()) == len(raws)


@settings(max_examples=200, deadline=None)
@given(digest_seed=st.text(max_size=8), tag=st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}", fullmatch=True))
def test_valid_pulls_round_trip_their_fields(digest_seed: str, tag: str) -> None:
    digest = fake_digest(digest_seed)
    (ev,) = parse_envelope(envelope(distribution_event(digest=digest, tag=tag))).events
    assert (ev.digest, ev.reference) == (digest, tag)
