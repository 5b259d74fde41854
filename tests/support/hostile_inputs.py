"""Generated hostile input (hypothesis) for the real bridge and fetcher: webhook requests of every malformed kind,
raw Kafka records that are not Avro, and ManifestPulled records whose fields try path traversal, other hosts,
oversized values. Each generated case knows what it is, so a test can count outcomes per kind."""

from __future__ import annotations

import contextlib
import copy
import json
import select
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from layerfill.oci import mediatypes
from layerfill.oci.reference import (
    InvalidReference,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag_or_digest,
)
from layerfill.serde.codec import EventCodec
from tests.support.notifications import V1, V2, distribution_event, harbor_pull

DIST = "/v1/notifications/distribution"
HARBOR = "/v1/webhooks/harbor"

# -- webhook requests --------------------------------------------------------------------------------------------


@dataclass
class WebhookRequest:
    kind: str
    path: str
    body: bytes
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # raw socket, Transfer-Encoding: chunked (no length to refuse up front)
    raw: bool = False  # raw socket: oversized bodies are refused before (or while) being sent

    def describe(self) -> str:
        return f"{self.kind} {self.method} {self.path} {self.headers} {self.body[:200]!r}... ({len(self.body)} bytes)"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# Built from alphabets, not regexes: a regex strategy costs milliseconds per draw, thousands of draws add up.
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_word = st.text(_ALNUM, min_size=1, max_size=8)
components = st.one_of(_word, st.builds(lambda a, sep, b: a + sep + b, _word, st.sampled_from("._-"), _word))
repositories = st.lists(components, min_size=1, max_size=3).map("/".join)
tags = st.builds(lambda a, b: a + b, st.text(_ALNUM + "ABCXYZ_", min_size=1, max_size=1),
                 st.text(_ALNUM + "ABCXYZ._-", max_size=15))  # fmt: skip
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
hosts = st.sampled_from(["cache.example:5000", "127.0.0.1:15001", "registry.local", "[::1]:5000"])
media_types = st.sampled_from(
    [mediatypes.OCI_MANIFEST, mediatypes.OCI_INDEX, mediatypes.DOCKER_MANIFEST, mediatypes.DOCKER_MANIFEST_LIST,
     "application/octet-stream", mediatypes.OCI_LAYER_GZIP, mediatypes.DOCKER_SCHEMA1_SIGNED_MANIFEST]
)  # fmt: skip

# Strings that try to escape a path, a URL or a log line; each is invalid in a repository, tag or digest.
TRAVERSALS = [
    "..", "../..", "../../etc/passwd", "a/../../b", "%2e%2e", "%2e%2e%2fetc", "%2E%2E/%2E%2E", "..%2f..", "/etc",
    "/etc/passwd", "etc/passwd\x00", "a\x00b", "\x00", "a\\..\\..\\b", "\\etc", "C:\\Windows", "a/./b", "./a", "a//b",
    "a/", "%00", "a%00b", "a\nb", "a\r\nLAYERFILL-FORGED: 1", "A", "a b", "a?b=c", "a#b", "a;b", "\uff41", "\u202ea",
    "..\u2215..", "a" * 300, "",
]  # fmt: skip
# A lone surrogate cannot even be encoded as Avro (UTF-8): for webhook bodies only, sent as raw bytes.
WEBHOOK_TRAVERSALS = [*TRAVERSALS, "\ud800"]
BAD_DIGESTS = [
    "sha256:..", "sha256:../../etc/passwd", "sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha256:" + "a" * 65,
    "sha256/" + "a" * 64, "md5:" + "a" * 32, "sha256:" + "a" * 63 + "\x00", "../sha256:" + "a" * 64,
    "sha256:%2e%2e" + "a" * 58, "sha256:" + "a" * 64 + "/../x", "", ":", "sha256:", "sha512:" + "b" * 64,
]  # fmt: skip
BAD_HOSTS = ["", "..", "/etc", "a b", "host:port", "host:99999", "evil.example/../x", "h\x00st", "[::1", "-bad-.x"]
HOSTILE_TEXT = st.one_of(
    st.sampled_from(TRAVERSALS),
    st.text(max_size=40),
    st.builds(lambda a, t, b: f"{a}{t}{b}", repositories, st.sampled_from(TRAVERSALS), repositories),
)
WEBHOOK_TEXT = HOSTILE_TEXT | st.sampled_from(WEBHOOK_TRAVERSALS)


@st.composite
def registry_events(draw: st.DrawFn) -> dict[str, Any]:
    return distribution_event(
        repository=draw(repositories),
        digest=draw(digests),
        tag=draw(st.none() | tags),
        media_type=draw(media_types),
        action=draw(st.sampled_from(["pull", "pull", "pull", "push", "mount", "delete"])),
        method=draw(st.sampled_from(["GET", "HEAD"])),
        host=draw(hosts),
        timestamp=draw(st.one_of(st.just("2026-11-28T04:38:03.627722884Z"), st.text(max_size=30))),
    )


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


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any], values: st.SearchStrategy[Any] = json_values) -> Any:
    """A well-formed document with 1-3 locations replaced by another value (usually of the wrong type) or removed."""
    doc = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = draw(values)
            continue
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this location
    return doc


def _dump(doc: Any, escaped: bool = False) -> bytes:
    # Unescaped, lone surrogates and control characters reach the server as raw (invalid) UTF-8; escaped, as
    # valid JSON ("\\ud800") that decodes to a string UTF-8 cannot encode. Both once failed the bridge.
    return json.dumps(doc, ensure_ascii=escaped).encode("utf-8", "surrogatepass")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _dist_headers(token: str, ctype: str = V1) -> dict[str, str]:
    return {"Content-Type": ctype, **_auth(token)}


@st.composite
def webhook_requests(draw: st.DrawFn, token: str, max_body: int) -> WebhookRequest:
    """One request to the bridge, of a kind drawn with weights that keep the cheap kinds plentiful."""
    kind = draw(
        st.sampled_from(
            ["dist-mutated"] * 6 + ["harbor-mutated"] * 4 + ["dist-valid"] * 2 + ["harbor-valid"]
            + ["dist-hostile-fields", "harbor-hostile-fields"] * 2
            + ["truncated"] * 3 + ["random-bytes"] * 2 + ["json-any"] * 2
            + ["deep-nesting", "huge-integer", "invalid-utf8", "many-events", "wrong-content-type",
               "wrong-token", "wrong-method", "unknown-path", "oversized-declared", "oversized-chunked",
               "oversized-fields"]
        )
    )  # fmt: skip
    dist_ok = _dist_headers(token, draw(st.sampled_from([V1, V2, "application/json", f"{V1}; charset=utf-8"])))
    harbor_ok = {"Content-Type": "application/json", "Authorization": token}
    if kind == "dist-mutated":
        return WebhookRequest(kind, DIST, _dump(draw(mutated(envelopes))), headers=dist_ok)
    if kind == "harbor-mutated":
        return WebhookRequest(kind, HARBOR, _dump(draw(mutated(webhooks))), headers=harbor_ok)
    if kind == "dist-valid":
        return WebhookRequest(kind, DIST, _dump(draw(envelopes)), headers=dist_ok)
    if kind == "harbor-valid":
        return WebhookRequest(kind, HARBOR, _dump(draw(webhooks)), headers=harbor_ok)
    if kind == "dist-hostile-fields":
        doc = draw(mutated(envelopes, WEBHOOK_TEXT))
        return WebhookRequest(kind, DIST, _dump(doc, draw(st.booleans())), headers=dist_ok)
    if kind == "harbor-hostile-fields":
        doc = draw(mutated(webhooks, WEBHOOK_TEXT))
        return WebhookRequest(kind, HARBOR, _dump(doc, draw(st.booleans())), headers=harbor_ok)
    if kind == "truncated":
        path, doc, hdrs = draw(st.sampled_from([(DIST, envelopes, dist_ok), (HARBOR, webhooks, harbor_ok)]))
        body = _dump(draw(doc))
        return WebhookRequest(kind, path, body[: draw(st.integers(0, len(body) - 1))], headers=hdrs)
    if kind == "random-bytes":
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, draw(st.binary(max_size=400)), headers=hdrs)
    if kind == "json-any":
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, _dump(draw(json_values)), headers=hdrs)
    if kind == "deep-nesting":
        depth = draw(st.sampled_from([1_000, 5_000, 100_000, max_body // 2]))
        opener = draw(st.sampled_from(['{"events":', '{"type":"PULL_ARTIFACT","event_data":']))
        body = (opener + draw(st.sampled_from(["[", '{"a":'])) * depth).encode()[:max_body]
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, body, headers=hdrs)
    if kind == "huge-integer":
        digits = draw(st.integers(4_301, 200_000))
        body = b'{"events": [' + b"9" * digits + b'], "occur_at": ' + b"1" * digits + b"}"
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, body, headers=hdrs)
    if kind == "invalid-utf8":
        body = _dump(draw(envelopes))
        at = draw(st.integers(0, len(body)))
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, body[:at] + bad + body[at:], headers=hdrs)
    if kind == "many-events":
        n = draw(st.integers(50, 400))
        ev = draw(registry_events())
        evs = []
        for i in range(n):
            e = copy.deepcopy(ev)
            e["id"] = f"{ev['id']}-{i}"
            evs.append(e)
        return WebhookRequest(kind, DIST, _dump({"events": evs}), headers=dist_ok)
    if kind == "wrong-content-type":
        ctype = draw(
            st.one_of(
                st.sampled_from(["", "text/plain", "application/xml", "multipart/form-data; boundary=x",
                                 "application/x-www-form-urlencoded", "application/vnd.docker.distribution.events.v3+json",
                                 "application/json-seq", "*/*"]),
                # Stripped: a field value's surrounding whitespace is not part of it (RFC 9110 5.5), and
                # requests refuses to send a value that starts with a space.
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
            )
        )  # fmt: skip
        return WebhookRequest(kind, DIST, _dump(draw(envelopes)), headers=_dist_headers(token, ctype))
    if kind == "wrong-token":
        wrong = draw(st.sampled_from(["", "x", token + "x", token[:-1], token.upper(), f"Basic {token}"]))
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        hdrs = {k: v for k, v in hdrs.items() if k != "Authorization"}
        if wrong:
            hdrs["Authorization"] = wrong
        return WebhookRequest(kind, path, _dump(draw(envelopes)), headers=hdrs)
    if kind == "wrong-method":
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]))
        return WebhookRequest(kind, draw(st.sampled_from([DIST, HARBOR])), b"{}", method=method, headers=dist_ok)
    if kind == "unknown-path":
        path = draw(st.sampled_from(["/", "/v1/notifications", "/v1/notifications/distribution/../../etc/passwd",
                                     "/v1/webhooks/quay", "/%2e%2e/%2e%2e/etc/passwd", "/v2/_catalog"]))  # fmt: skip
        return WebhookRequest(kind, path, _dump(draw(envelopes)), headers=dist_ok)
    if kind in ("oversized-declared", "oversized-chunked"):
        extra = draw(st.integers(1, 2 * max_body))
        pad = draw(st.sampled_from([b" ", b"a", b"\x00", b"\xff"]))
        body = b'{"events": [], "pad": "' + pad * (max_body + extra) + b'"}'
        path, hdrs = draw(st.sampled_from([(DIST, dist_ok), (HARBOR, harbor_ok)]))
        return WebhookRequest(kind, path, body, headers=hdrs, raw=True, chunked=kind == "oversized-chunked")
    assert kind == "oversized-fields"
    # Under the body cap, but one field holds most of it: the bridge dead-letters (truncated) or refuses it.
    size = draw(st.integers(300_000, max_body - 2_000))
    if draw(st.booleans()):
        ev = draw(registry_events())
        ev["target"][draw(st.sampled_from(["repository", "digest", "tag", "mediaType"]))] = "a" * size
        return WebhookRequest(kind, DIST, _dump({"events": [ev]}), headers=dist_ok)
    doc = draw(webhooks)
    doc["event_data"]["repository"]["repo_full_name"] = "a/" * (size // 2)
    return WebhookRequest(kind, HARBOR, _dump(doc), headers=harbor_ok)


def send_raw(host: str, port: int, req: WebhookRequest, timeout: float = 30.0) -> tuple[int | None, bytes]:
    """Send a (usually oversized) request over a fresh socket, watching for an early answer between pieces so that
    a server refusing the body is heard before it closes; (status or None when it closed silently, body)."""
    head = [f"{req.method} {req.path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in req.headers.items()]
    head.append("Transfer-Encoding: chunked" if req.chunked else f"Content-Length: {len(req.body)}")
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        piece = 64 * 1024
        for i in range(0, len(req.body), piece):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already: stop sending
            chunk = req.body[i : i + piece]
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if req.chunked else chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            if req.chunked:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"0\r\n\r\n")
        data = b""
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        sock.close()
    if not data.startswith(b"HTTP/1.1 "):
        return None, data
    status = int(data[9:12])
    return status, data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""


# -- Kafka records for the fetcher ---------------------------------------------------------------------------


@dataclass
class HostileRecord:
    kind: str
    value: bytes
    # For records that decode: the error class the fetcher must name (computed from the fields with the validators).
    expected: frozenset[str]


DECODE_ERRORS = frozenset(
    {"UnknownMagicError", "TruncatedMessageError", "MalformedBodyError", "ResolutionError", "UnknownSchemaError",
     "UnknownFingerprintError", "UnknownSchemaIdError", "UnknownRecordError", "InvalidEventError"}
)  # fmt: skip
# A random body after a valid header can, rarely, decode into some record; then the fields decide.
VALIDATION_ERRORS = frozenset({"InvalidReference", "NoRoute", "ValueError"})


def _valid(fn: Any, value: Any) -> bool:
    try:
        fn(value)
        return True
    except (InvalidReference, ValueError, TypeError):
        return False


def expected_for(value: dict[str, Any]) -> frozenset[str]:
    """What the fetcher must dead-letter a decodable ManifestPulled for: InvalidReference when a field is invalid
    (validated before routing), else NoRoute (no route names its registry)."""
    ok = (
        _valid(validate_registry, value["registry"])
        and _valid(validate_repository, value["repository"])
        and _valid(validate_digest, value["digest"])
        and (value.get("reference") is None or _valid(validate_tag_or_digest, value["reference"]))
        and (value.get("media_type") is None or mediatypes.is_manifest(value["media_type"])
             or mediatypes.is_index(value["media_type"]))
    )  # fmt: skip
    return frozenset({"NoRoute"}) if ok else frozenset({"InvalidReference"})


def _pulled(**fields: Any) -> dict[str, Any]:
    base = {
        "event_id": "hostile",
        "occurred_at": datetime(2026, 11, 28, tzinfo=UTC),
        "source": "library",
        "registry": "127.0.0.1:15001",
        "repository": "hostile/app",
        "reference": None,
        "digest": "sha256:" + "0" * 64,
        "media_type": None,
        "manifest": None,
    }
    base.update(fields)
    return base


@st.composite
def kafka_records(draw: st.DrawFn, codec: EventCodec, topic: str, routed_registry: str, unknown_hosts: list[str],
                  marker: str) -> HostileRecord:  # fmt: skip
    """A record for the fetcher's input topic that must be dead-lettered. `routed_registry` has a route (so only
    invalid fields stop it); `unknown_hosts` have none. `marker` goes into every repository it builds, so storage
    can be searched for it afterwards."""
    # Oversized ones are few (each is read back from the DLQ): one in 50.
    kind = "oversized-field" if draw(st.integers(0, 49)) == 0 else draw(
        st.sampled_from(
            ["random-bytes"] * 2 + ["wrong-magic", "truncated-avro", "valid-header-random-body", "other-record",
             "confluent-framed"] + ["hostile-fields"] * 6 + ["unknown-registry"] * 2
        )
    )  # fmt: skip
    good = _pulled(
        event_id=draw(st.uuids()).hex,
        registry=routed_registry,
        repository=f"{marker}/{draw(repositories)}",
        digest=draw(digests),
    )
    encoded = codec.encode("ManifestPulled", good, topic)
    if kind == "random-bytes":
        data = draw(st.binary(min_size=0, max_size=300))
        if data[:1] in (b"\x00", b"\xc3"):
            data = b"\x01" + data  # keep it a wire-format error; the framed kinds are drawn below
        return HostileRecord(kind, data, frozenset({"UnknownMagicError", "TruncatedMessageError"}))
    if kind == "wrong-magic":
        magic = draw(st.sampled_from([b"\x01", b"\xc3\x02", b"\xc2\x01", b"\xff\xff", b"{", b"\x7f"]))
        return HostileRecord(kind, magic + encoded[2:], frozenset({"UnknownMagicError"}))
    if kind == "truncated-avro":
        cut = draw(st.integers(1, len(encoded) - 1))
        return HostileRecord(kind, encoded[:cut], DECODE_ERRORS)
    if kind == "valid-header-random-body":
        return HostileRecord(kind, encoded[:10] + draw(st.binary(max_size=200)), DECODE_ERRORS | VALIDATION_ERRORS)
    if kind == "other-record":
        from layerfill.serde import events

        value = events.layer_cached(
            caused_by="x", registry=routed_registry, repository=f"{marker}/x", manifest_digest=good["digest"],
            digest=good["digest"], size=1, media_type=mediatypes.OCI_LAYER_GZIP, kind="layer", outcome="fetched",
            bytes_fetched=1,
        )  # fmt: skip
        return HostileRecord(kind, codec.encode("LayerCached", value, topic), frozenset({"ValueError"}))
    if kind == "confluent-framed":
        # Ids far above any the registry hands out (it numbers schemas from 1), so none names a real schema when the
        # stack runs with a registry (the devstack does); the body is the record's, without the codec's own header.
        schema_id = draw(st.integers(2**30, 2**31 - 1)).to_bytes(4, "big")
        body = encoded[5:] if encoded[:1] == b"\x00" else encoded[10:]
        return HostileRecord(kind, b"\x00" + schema_id + body, frozenset({"UnknownSchemaIdError"}))
    if kind == "oversized-field":
        size = draw(st.sampled_from([1_000, 20_000, 100_000, 300_000, 900_000]))  # Kafka's default cap is 1 MB
        name = draw(st.sampled_from(["repository", "digest", "reference", "registry", "event_id-and-repository"]))
        if name == "event_id-and-repository":
            value = {**good, "event_id": "e" * size, "repository": good["repository"] + "/" + "a" * 300}
        else:
            value = {**good, name: (good[name] or "") + "a" * size}
        return HostileRecord(kind, codec.encode("ManifestPulled", value, topic), expected_for(value))
    if kind == "unknown-registry":
        value = {**good, "registry": draw(st.sampled_from(unknown_hosts))}
        return HostileRecord(kind, codec.encode("ManifestPulled", value, topic), expected_for(value))
    # hostile-fields: at least one of the fields the fetcher puts in a URL or a storage key is invalid.
    field_name = draw(st.sampled_from(["registry", "repository", "repository", "digest", "reference", "media_type"]))
    if field_name == "registry":
        hostile: Any = draw(st.sampled_from(BAD_HOSTS) | st.text(max_size=20).filter(lambda h: not h.isalnum()))
    elif field_name == "repository":
        hostile = f"{marker}/" + draw(HOSTILE_TEXT) if draw(st.booleans()) else draw(HOSTILE_TEXT)
    elif field_name == "digest":
        hostile = draw(st.sampled_from(BAD_DIGESTS) | st.text(max_size=80))
    elif field_name == "reference":
        hostile = draw(st.sampled_from(TRAVERSALS))
    else:
        hostile = draw(st.sampled_from(["text/html", "../../etc", "application/vnd.oci.image.layer.v1.tar", "\x00"]))
    value = {**good, field_name: hostile}
    if draw(st.booleans()):  # and, sometimes, the manifest bytes too (not hashing to the digest)
        value["manifest"] = draw(st.binary(max_size=2000))
    expected = expected_for(value)
    if expected == frozenset({"NoRoute"}) and value["registry"] == routed_registry:
        # The draw happened to be valid after all (st.text can produce a valid repository): make it invalid.
        value["repository"] = f"{marker}/../{value['repository']}"
        expected = expected_for(value)
    # A drawn host can be a valid name after all ("a-b"): then it is just a registry no route names.
    kind = "unknown-registry" if expected == frozenset({"NoRoute"}) else f"hostile-{field_name}"
    return HostileRecord(kind, codec.encode("ManifestPulled", value, topic), expected)
