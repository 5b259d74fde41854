"""Quay action-log entries (Kafka and logs-API shapes) -> pulls, skips (counted) or invalid (dead-lettered),
and the identity each pull's event_id derives from."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layerfill.oci import mediatypes
from layerfill.producers.quay.entry import (
    Filters,
    InvalidEntry,
    QuayPull,
    Skip,
    api_entry,
    kafka_entry,
    number_occurrences,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
KINDS = {41: "pull_repo", 42: "push_repo", 7: "create_robot"}
FILTERS = Filters(organizations={"cache"}, ignore_users={"cache+layerfill"})


def kafka_raw(**meta: object) -> dict:
    metadata = {"namespace": "cache", "repo": "demo/app-b", "username": "alice", "mediaType": mediatypes.OCI_MANIFEST}
    metadata.update(meta)
    return {
        "random_id": 1234567,
        "kind_id": 41,
        "account_id": 3,
        "performer_id": 2,
        "repository_id": 9,
        "ip": "127.0.0.1",
        "datetime": "2026-12-02T17:40:01.123456",
        "namespace_name": "cache",
        "metadata": {k: v for k, v in metadata.items() if v is not None},
    }


def api_raw(**meta: object) -> dict:
    raw = kafka_raw(**meta)
    return {
        "kind": "pull_repo",
        "metadata": raw["metadata"],
        "ip": "127.0.0.1",
        "datetime": "Wed, 02 Dec 2026 17:40:01 -0000",
        "performer": {"kind": "user", "name": "alice", "is_robot": False, "avatar": {"hash": "x"}},
    }


def test_digest_pull_from_kafka() -> None:
    pull = kafka_entry(kafka_raw(manifest_digest=DIGEST), KINDS, FILTERS)
    assert isinstance(pull, QuayPull)
    assert pull.repository == "cache/demo/app-b"
    assert pull.digest == DIGEST and pull.tag is None
    assert pull.puller == "alice"
    assert pull.occurred_at == datetime(2026, 12, 2, 17, 40, 1, 123000, tzinfo=UTC)


def test_tag_pull_names_no_digest() -> None:
    pull = kafka_entry(kafka_raw(tag="1"), KINDS, FILTERS)
    assert isinstance(pull, QuayPull) and pull.digest is None and pull.tag == "1"


def test_other_kinds_orgs_and_own_pulls_are_skipped() -> None:
    assert kafka_entry({**kafka_raw(tag="1"), "kind_id": 42}, KINDS, FILTERS) == Skip("kind:push_repo")
    assert kafka_entry(kafka_raw(tag="1", namespace="other"), KINDS, FILTERS) == Skip("organization")
    assert kafka_entry(kafka_raw(tag="1", username="cache+layerfill"), KINDS, FILTERS) == Skip("own-pull")
    schema1 = kafka_raw(tag="1", mediaType=mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST)
    assert kafka_entry(schema1, KINDS, FILTERS) == Skip("schema1-manifest")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"kind_id": "41"}, "kind_id must be an integer"),
        ({"kind_id": 999}, "not in Quay's logentrykind table"),
        ({"random_id": None}, "random_id is missing"),
        ({"datetime": "yesterday"}, "not ISO 8601"),
        ({"metadata": "x"}, "metadata must be an object"),
    ],
)
def test_invalid_kafka_entries_name_the_field(change: dict, reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason):
        kafka_entry({**kafka_raw(tag="1"), **change}, KINDS, FILTERS)


def test_invalid_metadata_names_the_field() -> None:
    with pytest.raises(InvalidEntry, match="manifest_digest"):
        kafka_entry(kafka_raw(manifest_digest="sha256:nothex"), KINDS, FILTERS)
    with pytest.raises(InvalidEntry, match="neither manifest_digest nor tag"):
        kafka_entry(kafka_raw(), KINDS, FILTERS)
    with pytest.raises(InvalidEntry, match=r"metadata\.repo"):
        kafka_entry(kafka_raw(tag="1", repo="UPPER/Case"), KINDS, FILTERS)
    with pytest.raises(InvalidEntry, match="JSON object"):
        kafka_entry([1], KINDS, FILTERS)


def test_kafka_identity_is_the_entry_not_the_delivery() -> None:
    a = kafka_entry(kafka_raw(tag="1"), KINDS, FILTERS)
    b = kafka_entry(kafka_raw(tag="1"), KINDS, FILTERS)
    c = kafka_entry({**kafka_raw(tag="1"), "random_id": 7}, KINDS, FILTERS)
    assert isinstance(a, QuayPull) and isinstance(b, QuayPull) and isinstance(c, QuayPull)
    assert a.entry_key == b.entry_key != c.entry_key


def test_api_entry_and_identical_entries_stay_distinct() -> None:
    pull = api_entry(api_raw(manifest_digest=DIGEST), FILTERS)
    assert isinstance(pull, QuayPull)
    assert pull.occurred_at == datetime(2026, 12, 2, 17, 40, 1, tzinfo=UTC)
    twice = [api_raw(tag="1"), api_raw(tag="1"), api_raw(tag="2")]
    occ = number_occurrences(twice)
    assert occ == [0, 1, 0]
    keys = [
        p.entry_key for raw, o in zip(twice, occ, strict=True) if isinstance(p := api_entry(raw, FILTERS, o), QuayPull)
    ]
    assert len(set(keys)) == 3
    # The avatar (which Quay may change) is not part of the identity.
    other_avatar = {**api_raw(tag="1"), "performer": {"kind": "user", "name": "alice", "avatar": {"hash": "y"}}}
    assert api_entry(other_avatar, FILTERS).entry_key == api_entry(api_raw(tag="1"), FILTERS).entry_key  # type: ignore[union-attr]


def test_api_skips_and_bad_datetime() -> None:
    assert api_entry({**api_raw(tag="1"), "kind": "push_repo"}, FILTERS) == Skip("kind:push_repo")
    with pytest.raises(InvalidEntry, match="RFC 2822"):
        api_entry({**api_raw(tag="1"), "datetime": "soon"}, FILTERS)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_any_json_is_a_pull_a_skip_or_invalid(raw: object) -> None:
    for value in (raw, {**kafka_raw(tag="1"), "metadata": raw}, {**kafka_raw(tag="1"), "datetime": raw}):
        try:
            out = kafka_entry(value, KINDS, FILTERS)
        except InvalidEntry:
            continue
        assert isinstance(out, QuayPull | Skip)
