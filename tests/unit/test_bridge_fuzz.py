"""Thousands of generated requests against the bridge app (real Publisher and codec, recording Kafka): truncated
JSON, wrong types at every level of real envelopes and webhooks, arbitrary bytes, huge bodies, wrong tokens and
content types. Never a 5xx, never an exception; 400 exactly when the parser calls the body malformed; on 2xx
every event is accounted for and every published record is a valid ManifestPulled."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from layerfill.oci import mediatypes
from layerfill.oci.reference import validate_digest, validate_registry, validate_repository, validate_tag
from layerfill.producers import distribution, harbor
from layerfill.producers.pull_event import MalformedBody, Parsed
from layerfill.serde.codec import EventCodec
from tests.support.notifications import distribution_event, harbor_pull
from tests.unit.bridge_support import (
    DIST,
    DLQ_TOPIC,
    HARBOR,
    MAX_BODY,
    PULLED_TOPIC,
    TOKEN,
    RecordingProducer,
    headers,
    make_app,
    make_client,
)

pytestmark = pytest.mark.unit

CODEC = EventCodec()
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bridge() -> Iterator[tuple[TestClient, RecordingProducer]]:
    app, producer = make_app()
    with make_client(app) as client:
        yield client, producer


# -- generators -----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
components = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)?", fullmatch=True)
repositories = st.lists(components, min_size=1, max_size=3).map("/".join)
tags = st.from_regex(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,15}", fullmatch=True)
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
hosts = st.sampled_from(["cache.example:5000", "127.0.0.1:15001", "registry.local", "[::1]:5000"])
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.just("2026-11-28T04:38:03.627722884Z"),
    st.text(max_size=30),
)
media_types = st.sampled_from(
    [
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_MANIFEST,
        mediatypes.DOCKER_MANIFEST_LIST,
        "application/octet-stream",
        mediatypes.OCI_LAYER_GZIP,
        mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST,
    ]
)


@st.composite
def registry_events(draw: st.DrawFn) -> dict[str, Any]:
    ev = distribution_event(
        repository=draw(repositories),
        digest=draw(digests),
        tag=draw(st.none() | tags),
        media_type=draw(media_types),
        action=draw(st.sampled_from(["pull", "pull", "pull", "push", "mount", "delete"])),
        method=draw(st.sampled_from(["GET", "HEAD"])),
        host=draw(hosts),
        timestamp=draw(timestamps),
    )
    return ev


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a JSON document, the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A well-formed document with 1-3 locations replaced by an arbitrary value (usually of the wrong type)
    or removed: wrong types at every level, from the root down to single fields."""
    doc = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this location
    return doc


envelopes = st.lists(registry_events(), min_size=0, max_size=4).map(lambda evs: {"events": evs})
webhooks = st.builds(
    harbor_pull,
    project=components,
    name=repositories,
    digest=digests,
    tag=st.none() | tags,
    host=hosts,
    occur_at=st.integers(0, 4_000_000_000),
    operator=st.text(max_size=10),
    event_type=st.sampled_from(["PULL_ARTIFACT", "PULL_ARTIFACT", "PUSH_ARTIFACT", "DELETE_ARTIFACT"]),
)


# -- the oracle -------------------------------------------------------------------------------------
def _check(
    client: TestClient,
    producer: RecordingProducer,
    path: str,
    body: bytes,
    parse: Callable[[bytes, str | None], Parsed],
    hdrs: dict[str, str],
) -> None:
    producer.sent.clear()
    resp = client.post(path, content=body, headers=hdrs)
    event(f"HTTP {resp.status_code}")
    assert resp.status_code < 500, resp.text
    try:
        expected = parse(body, None)
    except MalformedBody as exc:
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"] == str(exc)  # the parser's own reason, not the bug fallback
        assert producer.sent == []
        return
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["published"] == len(expected.events)
    assert answer["dead_lettered"] == len(expected.invalid)
    assert answer["ignored"] == expected.ignored
    event(f"published {min(answer['published'], 2)}+, dead-lettered {min(answer['dead_lettered'], 1)}+")
    if path == DIST:
        total = len(json.loads(body)["events"])
        assert answer["published"] + answer["dead_lettered"] + sum(answer["ignored"].values()) == total
    published = producer.on(PULLED_TOPIC)
    assert len(published) == answer["published"]
    assert len(producer.on(DLQ_TOPIC)) == answer["dead_lettered"]
    for rec in published:
        record, value = CODEC.decode(rec.value)
        assert record == "ManifestPulled"
        validate_registry(value["registry"])
        validate_repository(value["repository"])
        validate_digest(value["digest"])
        if value["reference"] is not None:
            validate_tag(value["reference"])
        assert rec.key == f"{value['registry']}/{value['repository']}".encode()
    assert [CODEC.decode(r.value)[1]["event_id"] for r in published] == answer["event_ids"]


# -- distribution ---------------------------------------------------------------------------------
@FUZZ
@given(doc=mutated(envelopes))
def test_envelopes_with_wrong_types_at_any_level(bridge, doc: Any) -> None:
    _check(*bridge, DIST, json.dumps(doc).encode(), distribution.parse_envelope, headers())


@FUZZ
@given(doc=envelopes)
def test_well_formed_envelopes(bridge, doc: dict) -> None:
    _check(*bridge, DIST, json.dumps(doc).encode(), distribution.parse_envelope, headers())


@settings(max_examples=500, deadline=None)
@given(doc=envelopes, data=st.data())
def test_truncated_envelopes_are_400(bridge, doc: dict, data: st.DataObject) -> None:
    client, producer = bridge
    body = json.dumps(doc).encode()
    cut = data.draw(st.integers(0, len(body) - 1))
    producer.sent.clear()
    resp = client.post(DIST, content=body[:cut], headers=headers())
    assert resp.status_code == 400
    assert "not valid JSON" in resp.json()["error"]
    assert producer.sent == []


@settings(max_examples=500, deadline=None)
@given(doc=json_values)
def test_arbitrary_json_documents(bridge, doc: Any) -> None:
    _check(*bridge, DIST, json.dumps(doc).encode(), distribution.parse_envelope, headers())


@settings(max_examples=500, deadline=None)
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes(bridge, body: bytes) -> None:
    _check(*bridge, DIST, body, distribution.parse_envelope, headers())


# -- Harbor ---------------------------------------------------------------------------------------
@FUZZ
@given(doc=mutated(webhooks))
def test_harbor_webhooks_with_wrong_types_at_any_level(bridge, doc: Any) -> None:
    _check(*bridge, HARBOR, json.dumps(doc).encode(), harbor.parse_webhook, {"authorization": TOKEN})


# -- headers and size -----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(content_type=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60))
def test_unknown_content_types_are_415(bridge, content_type: str) -> None:
    client, producer = bridge
    producer.sent.clear()
    resp = client.post(DIST, content=b'{"events": []}', headers=headers(content_type))
    base = content_type.split(";")[0].strip().lower()
    assert resp.status_code == (200 if base in distribution.ENVELOPE_TYPES else 415)


@settings(max_examples=300, deadline=None)
@given(
    token=st.one_of(st.just(TOKEN), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)),
    header=st.sampled_from(["authorization", "x-layerfill-token"]),
    scheme=st.sampled_from(["", "Bearer ", "bearer ", "Basic "]),
)
def test_only_the_right_token_passes(bridge, token: str, header: str, scheme: str) -> None:
    client, producer = bridge
    value = scheme + token
    if header == "x-layerfill-token":
        right = value == TOKEN
    else:
        right = value == TOKEN or (scheme.lower() == "bearer " and token == TOKEN)
    producer.sent.clear()
    h = headers(token=None) | {header: value}
    for path in (DIST, HARBOR):
        resp = client.post(path, content=b'{"events": []}', headers=h)
        assert (resp.status_code == 401) != right, (path, value, resp.status_code)
    assert producer.sent == []


@settings(max_examples=100, deadline=None)
@given(extra=st.integers(1, 3 * MAX_BODY), streamed=st.booleans(), fill=st.binary(min_size=1, max_size=16))
def test_bodies_over_the_limit_are_413(bridge, extra: int, streamed: bool, fill: bytes) -> None:
    client, producer = bridge
    size = MAX_BODY + extra
    body = (fill * (size // len(fill) + 1))[:size]
    chunks = [body[i : i + 8192] for i in range(0, size, 8192)]
    producer.sent.clear()
    for path, h in ((DIST, headers()), (HARBOR, {"authorization": TOKEN})):
        # Streamed: no Content-Length, so the limit must hold while reading.
        content: Any = iter(chunks) if streamed else body
        resp = client.post(path, content=content, headers=h)
        assert resp.status_code == 413
    assert producer.sent == []
