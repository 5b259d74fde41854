from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from layerfill.config.routes import Route
from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, ImageIndex, ImageManifest, parse_manifest
from layerfill.oci.referrers import (
    Budget,
    Counts,
    KnownArtifact,
    KnownTag,
    Lookup,
    Memory,
    ReferrerPolicy,
    artifact_blobs,
    classify,
    classify_descriptor,
    classify_manifest,
    cosign_tag,
    lookups,
    referrer_entries,
    tag_schema_index,
    tag_schema_tag,
)

pytestmark = pytest.mark.unit

SUBJECT = "sha256:" + "ab" * 32


def dg(n: int) -> str:
    return f"sha256:{n:064x}"


def test_tags_follow_the_referrers_tag_schema_and_cosign() -> None:
    assert tag_schema_tag(SUBJECT) == "sha256-" + "ab" * 32
    assert cosign_tag(SUBJECT, "sig") == "sha256-" + "ab" * 32 + ".sig"
    assert cosign_tag(SUBJECT, "sbom").endswith(".sbom")
    with pytest.raises(ValueError):
        cosign_tag(SUBJECT, "exe")
    with pytest.raises(ValueError):
        tag_schema_tag("sha256:nothex")


def test_lookups_ask_the_api_first_while_its_support_is_unknown() -> None:
    got = lookups(SUBJECT, ReferrerPolicy(), referrers_api=None)
    assert got[0] == Lookup(SUBJECT, None)
    assert [(lk.tag, lk.kind) for lk in got[1:]] == [
        (tag_schema_tag(SUBJECT), None),
        (cosign_tag(SUBJECT, "sig"), "signature"),
        (cosign_tag(SUBJECT, "att"), "attestation"),
        (cosign_tag(SUBJECT, "sbom"), "sbom"),
    ]


def test_lookups_use_only_what_the_upstream_serves() -> None:
    without_api = lookups(SUBJECT, ReferrerPolicy(), referrers_api=False)
    assert not any(lk.is_api for lk in without_api)
    assert without_api[0].tag == tag_schema_tag(SUBJECT)
    with_api = lookups(SUBJECT, ReferrerPolicy(), referrers_api=True)
    assert with_api[0].is_api
    assert tag_schema_tag(SUBJECT) not in [lk.tag for lk in with_api]


def test_lookups_follow_only_the_policys_kinds() -> None:
    only_sigs = lookups(SUBJECT, ReferrerPolicy(follow=["signature"]), referrers_api=False)
    assert [lk.tag for lk in only_sigs] == [tag_schema_tag(SUBJECT), cosign_tag(SUBJECT, "sig")]
    assert lookups(SUBJECT, ReferrerPolicy(follow=[]), referrers_api=None) == []
    assert lookups(SUBJECT, ReferrerPolicy(max_artifacts=0), referrers_api=None) == []


@pytest.mark.parametrize(
    ("artifact_type", "config", "layers", "annotations", "kind"),
    [
        ("application/spdx+json", mt.OCI_EMPTY, ["application/spdx+json"], {}, "sbom"),
        ("application/vnd.cyclonedx+json", None, [], {}, "sbom"),
        ("application/vnd.example.sbom.v1", None, [], {}, "sbom"),
        ("application/vnd.cncf.notary.signature", None, [], {}, "signature"),
        ("application/vnd.in-toto+json", None, [], {}, "attestation"),
        ("application/vnd.dev.sigstore.bundle.v0.3+json", None, [], {}, "signature"),
        (
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            None,
            [],
            {"dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1"},
            "attestation",
        ),
        # cosign's tag-stored signature: no artifactType, an ordinary config, a simple-signing layer
        (None, mt.OCI_CONFIG, ["application/vnd.dev.cosign.simplesigning.v1+json"], {}, "signature"),
        (None, mt.OCI_CONFIG, ["application/vnd.dsse.envelope.v1+json"], {}, "attestation"),
        ("application/vnd.example.thing", mt.OCI_EMPTY, ["text/plain"], {}, "other"),
        ("Application/SPDX+JSON; charset=utf-8", None, [], {}, "sbom"),
    ],
)
def test_classify(artifact_type, config, layers, annotations, kind) -> None:
    assert classify(artifact_type, config, layers, annotations) == kind


def _artifact(artifact_type: str | None, layer_type: str) -> ImageManifest:
    return ImageManifest(
        mt.OCI_MANIFEST,
        Descriptor(mt.OCI_EMPTY, dg(1), 2),
        (Descriptor(layer_type, dg(2), 10), Descriptor(layer_type, dg(2), 10)),
        subject=Descriptor(mt.OCI_MANIFEST, SUBJECT, 500),
        artifact_type=artifact_type,
    )


def test_a_cosign_tag_decides_the_kind_of_what_it_holds() -> None:
    doc = _artifact(None, "application/octet-stream")
    assert classify_manifest(doc) == "other"
    assert classify_manifest(doc, Lookup(SUBJECT, cosign_tag(SUBJECT, "sbom"), "sbom")) == "sbom"


def test_classify_descriptor_only_when_it_announces_a_type() -> None:
    assert classify_descriptor(Descriptor(mt.OCI_MANIFEST, dg(3), 9)) is None
    assert classify_descriptor(Descriptor(mt.OCI_MANIFEST, dg(3), 9, artifact_type="text/spdx")) == "sbom"


def test_artifact_blobs_are_config_and_layers_once_without_foreign_ones() -> None:
    doc = ImageManifest(
        mt.OCI_MANIFEST,
        Descriptor(mt.OCI_EMPTY, dg(1), 2),
        (Descriptor("a/b", dg(2), 10), Descriptor("a/b", dg(2), 10), Descriptor("a/c", dg(4), 5, urls=("http://x",))),
    )
    assert [d.digest for d in artifact_blobs(doc)] == [dg(1), dg(2)]


def test_referrer_entries_and_a_synthesised_tag_schema_index_round_trip() -> None:
    entries = [
        Descriptor(mt.OCI_MANIFEST, dg(5), 400, artifact_type="application/spdx+json"),
        Descriptor(mt.OCI_MANIFEST, dg(6), 300, annotations={"org.opencontainers.image.created": "now"}),
    ]
    data = tag_schema_index(entries)
    assert data == tag_schema_index(entries)  # deterministic: same entries, same digest
    doc = parse_manifest(data, mt.OCI_INDEX)
    assert isinstance(doc, ImageIndex)
    assert referrer_entries(doc) == entries
    assert json.loads(data)["mediaType"] == mt.OCI_INDEX


def test_budget_caps_count_and_bytes() -> None:
    budget = Budget.of(ReferrerPolicy(max_artifacts=2, max_bytes=100))
    assert budget.admit(60)
    assert not budget.admit(50)  # bytes
    assert budget.admit(40)
    assert not budget.admit(0)  # count
    assert (budget.artifacts, budget.bytes) == (2, 100)


def test_policy_defaults_and_validation() -> None:
    policy = ReferrerPolicy()
    assert policy.follow == ["signature", "attestation", "sbom"] and policy.enabled
    assert 1 <= policy.max_depth <= 5 and policy.recheck_interval_s > 0
    with pytest.raises(ValidationError):
        ReferrerPolicy(follow=["everything"])
    with pytest.raises(ValidationError):
        ReferrerPolicy(max_depth=0)
    route = Route(registry="cache:5000", upstream_url="http://up", referrers={"follow": ["sbom"], "max_bytes": 5})
    assert route.referrers.follow == ["sbom"] and route.referrers.max_bytes == 5
    assert Route(registry="cache:5000", upstream_url="http://up").referrers == ReferrerPolicy()


def test_memory_round_trips_and_counts_each_digest_once() -> None:
    sig = KnownArtifact(dg(7), "signature", 900)
    sbom = KnownArtifact(dg(8), "sbom", 1200)
    memory = Memory(
        referrers_api=False,
        subjects=[SUBJECT],
        tags={
            cosign_tag(SUBJECT, "sig"): KnownTag(dg(7), [sig]),
            tag_schema_tag(SUBJECT): KnownTag(dg(9), [sbom, sig]),
        },
    )
    back = Memory.from_json(json.loads(json.dumps(memory.to_json())))
    assert back == memory
    assert back.counts() == Counts(signatures=1, sboms=1, bytes=2100)


def test_memory_forgets_what_it_cannot_read() -> None:
    assert Memory.from_json(None) == Memory()
    assert Memory.from_json({"referrers_api": "yes", "subjects": ["bad"], "tags": []}) == Memory()
    odd = Memory.from_json(
        {"tags": {"a": {"digest": "nope", "artifacts": []}, "b": {"digest": dg(1), "artifacts": [[dg(2), "virus", 1]]}}}
    )
    assert odd.tags == {}
