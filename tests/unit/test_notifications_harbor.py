"""The Harbor webhook parser: PULL_ARTIFACT becomes ManifestPulled, other types are ignored and counted,
bad resources are dead-lettered with a reason naming the field, redeliveries keep their event_id."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerfill.producers.harbor import parse_webhook
from layerfill.producers.pull_event import MalformedBody
from tests.support.notifications import fake_digest, harbor_pull

pytestmark = pytest.mark.unit


def _body(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_pull_artifact_by_tag_becomes_one_event() -> None:
    doc = harbor_pull(project="proxy", name="library/debian", tag="12", host="harbor.example:8443")
    (ev,) = parse_webhook(_body(doc)).events
    assert ev.source == "harbor"
    assert ev.registry == "harbor.example:8443"
    assert ev.repository == "proxy/library/debian"
    assert ev.reference == "12"
    assert ev.digest == doc["event_data"]["resources"][0]["digest"]
    assert ev.occurred_at == datetime.fromtimestamp(1_795_000_000, UTC)


def test_pull_artifact_by_digest_has_no_reference() -> None:
    (ev,) = parse_webhook(_body(harbor_pull(tag=None))).events
    assert ev.reference is None


@pytest.mark.parametrize("event_type", ["PUSH_ARTIFACT", "DELETE_ARTIFACT", "SCANNING_COMPLETED", "QUOTA_WARNING"])
def test_other_types_are_ignored_and_counted(event_type: str) -> None:
    parsed = parse_webhook(_body(harbor_pull(event_type=event_type)))
    assert parsed.events == [] and parsed.invalid == []
    assert parsed.ignored == {f"type:{event_type}": 1}


def test_event_id_is_stable_across_redelivery_and_differs_per_pull() -> None:
    doc = harbor_pull()
    first = parse_webhook(_body(doc)).events[0].event_id
    assert parse_webhook(_body(doc)).events[0].event_id == first
    assert parse_webhook(_body(harbor_pull(occur_at=1_795_000_001))).events[0].event_id != first
    assert parse_webhook(_body(harbor_pull(operator="someone"))).events[0].event_id != first


def test_registry_name_overrides_resource_url() -> None:
    doc = harbor_pull(host="10.1.2.3")
    assert parse_webhook(_body(doc), "harbor.example.com").events[0].registry == "harbor.example.com"
    del doc["event_data"]["resources"][0]["resource_url"]
    assert parse_webhook(_body(doc), "harbor.example.com").events[0].registry == "harbor.example.com"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.update(digest="sha256:short"), "resources[].digest"),
        (lambda r: r.pop("digest"), "resources[].digest"),
        (lambda r: r.update(tag="-x"), "resources[].tag"),
        (lambda r: r.update(tag=5), "resources[].tag"),
        (lambda r: r.pop("resource_url"), "resources[].resource_url"),
        (lambda r: r.update(resource_url="bad host/x/y:1"), "resources[].resource_url"),
    ],
)
def test_bad_resources_are_dead_lettered_naming_the_field(mutate, field: str) -> None:
    doc = harbor_pull()
    good = dict(doc["event_data"]["resources"][0], digest=fake_digest("other"))
    mutate(doc["event_data"]["resources"][0])
    doc["event_data"]["resources"].append(good)
    parsed = parse_webhook(_body(doc))
    assert [e.digest for e in parsed.events] == [good["digest"]]
    (bad,) = parsed.invalid
    assert field in bad.reason


def test_a_bad_repository_name_dead_letters_every_resource() -> None:
    doc = harbor_pull()
    doc["event_data"]["repository"]["repo_full_name"] = "Proxy/../x"
    parsed = parse_webhook(_body(doc))
    assert parsed.events == []
    assert "repository.repo_full_name" in parsed.invalid[0].reason


@pytest.mark.parametrize("occur_at", [1e300, -1e300, 10**30])
def test_occur_at_out_of_range_is_dead_lettered(occur_at) -> None:
    doc = harbor_pull()
    doc["occur_at"] = occur_at
    parsed = parse_webhook(_body(doc))
    assert parsed.events == [] and "occur_at" in parsed.invalid[0].reason


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "type"),
        ({"type": 1}, "type"),
        ({"type": "PULL_ARTIFACT"}, "event_data.resources"),
        ({"type": "PULL_ARTIFACT", "event_data": {"resources": {}}}, "event_data.resources"),
        ({"type": "PULL_ARTIFACT", "event_data": {"resources": []}}, "repo_full_name"),
        (
            {"type": "PULL_ARTIFACT", "event_data": {"resources": [], "repository": {"repo_full_name": 3}}},
            "repo_full_name",
        ),
        (
            {"type": "PULL_ARTIFACT", "event_data": {"resources": [], "repository": {"repo_full_name": "a/b"}}},
            "occur_at",
        ),
        (
            {
                "type": "PULL_ARTIFACT",
                "occur_at": "now",
                "event_data": {"resources": [], "repository": {"repo_full_name": "a/b"}},
            },
            "occur_at",
        ),
        (
            {
                "type": "PULL_ARTIFACT",
                "occur_at": True,
                "event_data": {"resources": [], "repository": {"repo_full_name": "a/b"}},
            },
            "occur_at",
        ),
    ],
)
def test_malformed_webhooks_name_the_field(doc, field: str) -> None:
    with pytest.raises(MalformedBody, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_webhook(_body(doc))


@pytest.mark.parametrize("body", [b"", b"{", b"\x80", b"null", b"1e999"])
def test_non_json_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedBody):
        parse_webhook(body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_json, max_size=5), _json, _json)
def test_arbitrary_resources_are_each_accounted_for(resources: list, occur_at, operator) -> None:
    doc = harbor_pull()
    doc["event_data"]["resources"] = resources
    doc["occur_at"] = occur_at
    doc["operator"] = operator
    try:
        parsed = parse_webhook(_body(doc))
    except MalformedBody:
        assert not isinstance(occur_at, int | float) or isinstance(occur_at, bool)
        return
    assert len(parsed.events) + len(parsed.invalid) == len(resources)
