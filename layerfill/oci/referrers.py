"""Supply-chain artifacts of an image (signatures, attestations, SBOMs): where to look, what was found, what to
keep. Pure: no I/O; consumers/fetcher/referrers.py does the requests.

Artifacts point at their subject; a registry finds them three ways, each of which a client may use:
- the OCI referrers API, `GET /v2/<name>/referrers/<digest>` (an index of descriptors), where it is served;
- the referrers tag schema: the same index under the tag `<alg>-<hex>` (what clients fall back to, and what
  a CNCF distribution cache can serve, having no referrers API);
- cosign's own tags `<alg>-<hex>.sig`, `.att`, `.sbom`, each one manifest.
Artifacts can have artifacts (a signed SBOM): discovery repeats for each artifact found, to a bounded depth.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, ImageIndex, ImageManifest
from layerfill.oci.reference import Digest

ArtifactKind = Literal["signature", "attestation", "sbom", "other"]
KINDS: tuple[ArtifactKind, ...] = ("signature", "attestation", "sbom", "other")
MiB = 1024 * 1024

# cosign's tag suffixes and what each holds.
COSIGN_SUFFIXES: dict[str, ArtifactKind] = {"sig": "signature", "att": "attestation", "sbom": "sbom"}

# artifactType / config / layer media types, matched exactly (lower-case, without parameters).
_EXACT: dict[str, ArtifactKind] = {
    # cosign (simple signing payloads, DSSE envelopes, its artifact types with the referrers mode)
    "application/vnd.dev.cosign.simplesigning.v1+json": "signature",
    "application/vnd.dev.cosign.artifact.sig.v1+json": "signature",
    "application/vnd.dev.cosign.artifact.att.v1+json": "attestation",
    "application/vnd.dev.cosign.artifact.sbom.v1+json": "sbom",
    "application/vnd.dsse.envelope.v1+json": "attestation",
    "application/vnd.in-toto+json": "attestation",
    # Notary v2 / notation
    "application/vnd.cncf.notary.signature": "signature",
    "application/vnd.cncf.notary.v2.signature": "signature",
    # SBOM formats
    "application/spdx+json": "sbom",
    "text/spdx": "sbom",
    "text/spdx+json": "sbom",
    "application/vnd.cyclonedx": "sbom",
    "application/vnd.cyclonedx+json": "sbom",
    "application/vnd.cyclonedx+xml": "sbom",
    "application/vnd.syft+json": "sbom",
}
# A sigstore bundle is a signature unless it carries a predicate (then it is an attestation).
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
SIGSTORE_PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicatetype"


class ReferrerPolicy(BaseModel):
    """Per route: which supply-chain artifacts travel with an image, and how much of them at most."""

    follow: list[ArtifactKind] = Field(
        default_factory=lambda: ["signature", "attestation", "sbom"],
        description="artifact kinds to copy into the cache; [] turns discovery off for the route",
    )
    max_artifacts: int = Field(32, ge=0, description="at most this many artifacts per image (index and platforms)")
    max_bytes: int = Field(64 * MiB, ge=0, description="at most this many artifact bytes per image")
    max_depth: int = Field(2, ge=1, le=5, description="1: artifacts of the image; 2: also their artifacts; ...")
    recheck_interval_s: float = Field(
        3600.0, ge=0, description="a later pull looks for new artifacts at most this often per image"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.follow) and self.max_artifacts > 0 and self.max_bytes > 0


# -- where to look ---------------------------------------------------------------------------------


def tag_schema_tag(subject: str) -> str:
    """The referrers tag schema's tag for `subject`: `<alg>-<hex>` (OCI distribution-spec, at most 128)."""
    d = Digest.parse(subject, "subject")
    return f"{d.algorithm}-{d.hex}"[:128]


def cosign_tag(subject: str, suffix: str) -> str:
    if suffix not in COSIGN_SUFFIXES:
        raise ValueError(f"unknown cosign tag suffix {suffix!r}")
    d = Digest.parse(subject, "subject")
    return f"{d.algorithm}-{d.hex}.{suffix}"


@dataclass(frozen=True)
class Lookup:
    """One place to look for `subject`'s artifacts: the referrers API (tag None) or a tag."""

    subject: str
    tag: str | None
    kind: ArtifactKind | None = None  # what a cosign tag holds; None: classify each artifact found

    @property
    def is_api(self) -> bool:
        return self.tag is None


def lookups(subject: str, policy: ReferrerPolicy, *, referrers_api: bool | None) -> list[Lookup]:
    """Where to look for `subject`'s artifacts. `referrers_api`: whether the upstream serves the referrers API
    (None: not known yet, ask it first; False: it answered 404 before, so the tag schema instead)."""
    if not policy.enabled:
        return []
    out: list[Lookup] = []
    if referrers_api is not False:
        out.append(Lookup(subject, None))
    if referrers_api is not True:
        out.append(Lookup(subject, tag_schema_tag(subject)))
    for suffix, kind in COSIGN_SUFFIXES.items():
        if kind in policy.follow:
            out.append(Lookup(subject, cosign_tag(subject, suffix), kind))
    return out


# -- what was found ----------------------------------------------------------------------------------


def classify(
    artifact_type: str | None,
    config_media_type: str | None = None,
    layer_media_types: Iterable[str] = (),
    annotations: Mapping[str, str] | None = None,
) -> ArtifactKind:
    """signature / attestation / sbom / other, from the artifactType, else the config's media type, else the
    first layer whose media type tells (cosign's tag-stored manifests declare no artifactType)."""
    lowered = {k.lower(): v for k, v in (annotations or {}).items()}
    config = mt.base_type(config_media_type)
    candidates = [mt.base_type(artifact_type)]
    if config not in (mt.OCI_CONFIG, mt.OCI_EMPTY, mt.DOCKER_CONFIG):
        candidates.append(config)
    candidates.extend(mt.base_type(t) for t in layer_media_types)
    for media_type in candidates:
        kind = _kind_of(media_type, lowered)
        if kind is not None:
            return kind
    return "other"


def _kind_of(media_type: str, annotations: Mapping[str, str]) -> ArtifactKind | None:
    if not media_type:
        return None
    if media_type in _EXACT:
        return _EXACT[media_type]
    if media_type.startswith(SIGSTORE_BUNDLE_PREFIX):
        return "attestation" if SIGSTORE_PREDICATE_ANNOTATION in annotations else "signature"
    for word, kind in (("spdx", "sbom"), ("cyclonedx", "sbom"), ("sbom", "sbom"), ("in-toto", "attestation")):
        if word in media_type:
            return kind  # type: ignore[return-value]
    return None


def classify_manifest(doc: ImageManifest | ImageIndex, via: Lookup | None = None) -> ArtifactKind:
    """The kind of a fetched artifact manifest; a cosign tag's suffix decides for what it stores."""
    if via is not None and via.kind is not None:
        return via.kind
    if isinstance(doc, ImageManifest):
        return classify(doc.artifact_type, doc.config.media_type, [d.media_type for d in doc.layers], doc.annotations)
    return classify(doc.artifact_type, None, (), doc.annotations)


def classify_descriptor(desc: Descriptor) -> ArtifactKind | None:
    """The kind a referrers index entry announces through its artifactType; None when it announces none
    (then only the manifest tells)."""
    if not desc.artifact_type:
        return None
    return classify(desc.artifact_type, annotations=desc.annotations)


def referrer_entries(index: ImageIndex) -> list[Descriptor]:
    """The artifact descriptors of a referrers API answer or tag-schema index (manifests only)."""
    return [d for d in index.manifests if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)]


def artifact_blobs(doc: ImageManifest) -> list[Descriptor]:
    """The blobs an artifact manifest needs in the cache: its config and layers (each digest once; layers
    that live elsewhere, `urls`, are not the registry's to serve)."""
    seen: set[str] = set()
    out: list[Descriptor] = []
    for d in (doc.config, *doc.layers):
        if d.urls or d.digest in seen:
            continue
        seen.add(d.digest)
        out.append(d)
    return out


def tag_schema_index(entries: Iterable[Descriptor]) -> bytes:
    """A referrers tag-schema index listing `entries`, for a cache with no referrers API when the upstream
    answered through the API. Compact and in the given order, so the same entries give the same digest."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [e.to_dict() for e in entries],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# -- how much to keep --------------------------------------------------------------------------------


@dataclass
class Budget:
    """The policy's per-image caps, consumed as artifacts are admitted."""

    max_artifacts: int
    max_bytes: int
    artifacts: int = 0
    bytes: int = 0

    @classmethod
    def of(cls, policy: ReferrerPolicy) -> Budget:
        return cls(policy.max_artifacts, policy.max_bytes)

    def admit(self, nbytes: int) -> bool:
        """Take one artifact of `nbytes` (manifest and blobs) if both caps allow it."""
        if self.artifacts + 1 > self.max_artifacts or self.bytes + nbytes > self.max_bytes:
            return False
        self.artifacts += 1
        self.bytes += nbytes
        return True

    def fits(self, nbytes: int) -> bool:
        return self.bytes + nbytes <= self.max_bytes


@dataclass
class Counts:
    """Artifacts in the cache for one image, by kind, as ImageCached and `layerfill status` report them."""

    signatures: int = 0
    attestations: int = 0
    sboms: int = 0
    other: int = 0
    bytes: int = 0
    skipped: int = 0  # found but left out: a kind not followed, over a cap, or deeper than max_depth

    def add(self, kind: ArtifactKind, nbytes: int) -> None:
        attr = {"signature": "signatures", "attestation": "attestations", "sbom": "sboms", "other": "other"}[kind]
        setattr(self, attr, getattr(self, attr) + 1)
        self.bytes += nbytes

    @property
    def total(self) -> int:
        return self.signatures + self.attestations + self.sboms + self.other

    def to_dict(self) -> dict[str, int]:
        return {
            "signatures": self.signatures,
            "attestations": self.attestations,
            "sboms": self.sboms,
            "other": self.other,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


# -- what is remembered between checks ---------------------------------------------------------------


@dataclass(frozen=True)
class KnownArtifact:
    digest: str
    kind: ArtifactKind
    bytes: int


@dataclass
class KnownTag:
    """A tag found at the upstream, the manifest it named, and the artifacts that manifest gave (a cosign
    tag: itself; a tag-schema index: its followed entries). Stored only once everything is in the cache."""

    digest: str
    artifacts: list[KnownArtifact] = field(default_factory=list)


@dataclass
class Memory:
    """What the last check of an image found: per tag its digest and artifacts, and whether the upstream
    serves the referrers API. A later check HEADs each tag and GETs only those whose digest moved."""

    referrers_api: bool | None = None
    tags: dict[str, KnownTag] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)  # the image's manifests: the index and its platforms

    def to_json(self) -> dict[str, Any]:
        return {
            "referrers_api": self.referrers_api,
            "subjects": list(self.subjects),
            "tags": {
                tag: {"digest": t.digest, "artifacts": [[a.digest, a.kind, a.bytes] for a in t.artifacts]}
                for tag, t in sorted(self.tags.items())
            },
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> Memory:
        """Tolerant: anything unreadable is forgotten (it only costs GETs at the next check)."""
        memory = cls()
        if not isinstance(value, Mapping):
            return memory
        api = value.get("referrers_api")
        memory.referrers_api = api if isinstance(api, bool) else None
        subjects = value.get("subjects")
        if isinstance(subjects, list):
            try:
                memory.subjects = [str(Digest.parse(d)) for d in subjects]
            except ValueError:
                memory.subjects = []
        tags = value.get("tags")
        if not isinstance(tags, Mapping):
            return memory
        for tag, entry in tags.items():
            try:
                Digest.parse(entry["digest"])
                artifacts = [KnownArtifact(str(Digest.parse(d)), k, int(n)) for d, k, n in entry["artifacts"]]
                if any(a.kind not in KINDS for a in artifacts):
                    continue
                memory.tags[str(tag)] = KnownTag(entry["digest"], artifacts)
            except (KeyError, TypeError, ValueError):
                continue
        return memory

    def counts(self) -> Counts:
        """Counts over every remembered artifact, each digest once."""
        counts = Counts()
        seen: set[str] = set()
        for t in self.tags.values():
            for a in t.artifacts:
                if a.digest not in seen:
                    seen.add(a.digest)
                    counts.add(a.kind, a.bytes)
        return counts
