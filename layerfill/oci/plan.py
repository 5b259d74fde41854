"""The planner: from parsed manifests to the set of blobs and child manifests that make an image complete.

Pure: the fetcher feeds it manifests as it fetches them and gets back what to fetch next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from layerfill.oci import mediatypes as mt
from layerfill.oci.manifest import Descriptor, ImageIndex, ImageManifest, Platform

# BuildKit marks provenance/SBOM manifests in an index this way (platform unknown/unknown).
ATTESTATION_TYPE_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_TYPE = "attestation-manifest"
ATTESTATION_SUBJECT_ANNOTATION = "vnd.docker.reference.digest"
DEFAULT_MAX_INDEX_DEPTH = 2

BlobKind = Literal["config", "layer"]
ManifestKind = Literal["index", "image"]


class PlanError(ValueError):
    """The manifests do not form a plannable tree (loops, excess nesting, contradictions)."""


class SkipReason(StrEnum):
    FOREIGN_LAYER = "foreign_layer"
    PLATFORM_EXCLUDED = "platform_excluded"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"


@dataclass(frozen=True, slots=True)
class Skipped:
    digest: str
    reason: SkipReason
    media_type: str
    size: int
    manifest_digest: str | None  # the manifest or index that referenced it
    platform: str | None = None


@dataclass(frozen=True, slots=True)
class BlobItem:
    digest: str
    size: int
    media_type: str
    kind: BlobKind
    manifest_digest: str  # the image manifest that references it


@dataclass(frozen=True, slots=True)
class ImagePlan:
    manifest_digest: str
    config: BlobItem
    layers: tuple[BlobItem, ...]  # distributable layers, in manifest order, each digest once
    skipped: tuple[Skipped, ...]

    def blobs(self) -> list[BlobItem]:
        """Config then layers."""
        return [self.config, *self.layers]


_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm"}
# What an absent variant means, as containerd's platform matcher reads it.
_DEFAULT_VARIANT = {"arm64": "v8", "arm": "v7"}


def _normalize(platform: Platform) -> tuple[str, str, str | None]:
    arch = _ARCH_ALIASES.get(platform.architecture.lower(), platform.architecture.lower())
    variant = platform.variant.lower() if platform.variant else _DEFAULT_VARIANT.get(arch)
    if variant is not None and variant.isdigit():
        variant = f"v{variant}"
    return platform.os.lower(), arch, variant


def is_attestation(descriptor: Descriptor) -> bool:
    if descriptor.annotations.get(ATTESTATION_TYPE_ANNOTATION) == ATTESTATION_TYPE:
        return True
    p = descriptor.platform
    return p is not None and p.os == "unknown" and p.architecture == "unknown"


@dataclass(frozen=True, slots=True)
class PlatformPolicy:
    """Which children of an index to make complete.

    `platforms=None` keeps every platform. Entries without a platform are always kept (nothing to
    judge them by). Attestation manifests follow `attestations`, and with a platform list they are
    kept only when the image they describe is kept.
    """

    platforms: tuple[Platform, ...] | None = None
    attestations: bool = True

    @classmethod
    def parse(cls, platforms: Iterable[str] | None, *, attestations: bool = True) -> PlatformPolicy:
        """From `os/arch[/variant]` strings; None, an empty list or `all` keeps every platform."""
        values = [p.strip() for p in platforms or [] if p.strip()]
        if not values or values == ["all"]:
            return cls(None, attestations)
        return cls(tuple(Platform.parse(v) for v in values), attestations)

    def keeps_platform(self, platform: Platform | None) -> bool:
        if platform is None or self.platforms is None:
            return True
        os_name, arch, variant = _normalize(platform)
        for wanted in self.platforms:
            w_os, w_arch, w_variant = _normalize(wanted)
            if (os_name, arch) == (w_os, w_arch) and (wanted.variant is None or variant == w_variant):
                return True
        return False


def plan_index(
    index: ImageIndex, policy: PlatformPolicy | None = None, index_digest: str | None = None
) -> tuple[list[Descriptor], list[Skipped]]:
    """Children of `index` to make complete (each digest once, index order) and those left out."""
    policy = policy or PlatformPolicy()
    children: list[Descriptor] = []
    skipped: list[Skipped] = []
    seen: dict[str, Descriptor] = {}
    attestations: list[Descriptor] = []

    def skip(d: Descriptor, reason: SkipReason) -> None:
        platform = str(d.platform) if d.platform else None
        skipped.append(Skipped(d.digest, reason, d.media_type, d.size, index_digest, platform))

    for d in index.manifests:
        if index_digest is not None and d.digest == index_digest:
            raise PlanError(f"index {index_digest} lists itself as a child")
        if d.digest in seen:
            if seen[d.digest].size != d.size:
                raise PlanError(f"child {d.digest} listed with sizes {seen[d.digest].size} and {d.size}")
            continue
        seen[d.digest] = d
        if not (mt.is_manifest(d.media_type) or mt.is_index(d.media_type)):
            skip(d, SkipReason.UNSUPPORTED_MEDIA_TYPE)
        elif is_attestation(d):
            attestations.append(d)  # decided once we know which images are kept
        elif policy.keeps_platform(d.platform):
            children.append(d)
        else:
            skip(d, SkipReason.PLATFORM_EXCLUDED)

    kept = {d.digest for d in children}
    for d in attestations:
        subject = d.annotations.get(ATTESTATION_SUBJECT_ANNOTATION)
        subject_kept = subject is None or subject not in seen or subject in kept
        if policy.attestations and subject_kept:
            children.append(d)
        else:
            skip(d, SkipReason.PLATFORM_EXCLUDED)
    # Attestations were held back; restore index order so the output is stable and readable.
    order = {d.digest: i for i, d in enumerate(index.manifests)}
    children.sort(key=lambda d: order[d.digest])
    skipped.sort(key=lambda s: order[s.digest])
    return children, skipped


def _is_foreign(d: Descriptor) -> bool:
    return mt.is_foreign_layer(d.media_type) or bool(d.urls)


def plan_image(manifest: ImageManifest, manifest_digest: str) -> ImagePlan:
    """Config and distributable layers of one image manifest; foreign layers are skipped."""
    config = BlobItem(
        manifest.config.digest, manifest.config.size, manifest.config.media_type, "config", manifest_digest
    )
    layers: dict[str, BlobItem] = {}
    skipped: list[Skipped] = []
    for d in manifest.layers:
        if _is_foreign(d):
            skipped.append(Skipped(d.digest, SkipReason.FOREIGN_LAYER, d.media_type, d.size, manifest_digest))
            continue
        previous = layers.get(d.digest)
        if previous is not None:
            if previous.size != d.size:
                raise PlanError(f"layer {d.digest} listed with sizes {previous.size} and {d.size}")
            continue
        layers[d.digest] = BlobItem(d.digest, d.size, d.media_type, "layer", manifest_digest)
    return ImagePlan(manifest_digest, config, tuple(layers.values()), tuple(skipped))


@dataclass(frozen=True, slots=True)
class PlannedManifest:
    digest: str
    kind: ManifestKind
    media_type: str
    size: int
    platform: Platform | None
    depth: int  # 0 for the root
    parent: str | None
    config: BlobItem | None = None
    layers: tuple[BlobItem, ...] = ()
    children: tuple[str, ...] = ()  # kept child digests, for an index


@dataclass(slots=True)
class _Expected:
    descriptor: Descriptor | None  # None for the root
    parent: str | None
    depth: int


@dataclass
class Plan:
    """The whole plan for one pulled manifest, grown as the fetcher fetches manifests.

    Start with the root digest and size, then call `add_index`/`add_image` for the root and for every
    child they return. Each blob is returned for fetching once even when several platforms share it;
    every manifest still lists it in its own `PlannedManifest`.
    """

    root_digest: str
    root_size: int
    policy: PlatformPolicy = field(default_factory=PlatformPolicy)
    max_index_depth: int = DEFAULT_MAX_INDEX_DEPTH
    _expected: dict[str, _Expected] = field(default_factory=dict, init=False, repr=False)
    _manifests: dict[str, PlannedManifest] = field(default_factory=dict, init=False, repr=False)
    _blobs: dict[str, BlobItem] = field(default_factory=dict, init=False, repr=False)
    _blob_users: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    _skipped: list[Skipped] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._expected[self.root_digest] = _Expected(None, None, 0)

    def _expect(self, digest: str, kind: ManifestKind) -> _Expected:
        # Validation only: the entry leaves `_expected` in `_record`, once nothing can fail.
        if digest in self._manifests:
            raise PlanError(f"manifest {digest} was already planned")
        expected = self._expected.get(digest)
        if expected is None:
            raise PlanError(f"manifest {digest} is neither the root nor a pending child of this plan")
        d = expected.descriptor
        if d is not None and (mt.is_index(d.media_type) != (kind == "index")):
            raise PlanError(f"manifest {digest} is an {kind} but its parent declared {d.media_type}")
        return expected

    def _ancestors(self, digest: str | None) -> set[str]:
        found: set[str] = set()
        while digest is not None:
            found.add(digest)
            digest = self._manifests[digest].parent
        return found

    def add_index(self, digest: str, index: ImageIndex) -> list[Descriptor]:
        """Record an index; return the children not yet seen, which the caller should fetch next."""
        expected = self._expect(digest, "index")
        if expected.depth + 1 > self.max_index_depth:
            raise PlanError(
                f"index {digest} is nested {expected.depth + 1} levels deep; at most {self.max_index_depth} are allowed"
            )
        children, skipped = plan_index(index, self.policy, digest)
        ancestors = self._ancestors(expected.parent) | {digest}
        for child in children:
            if child.digest in ancestors:
                raise PlanError(f"index {digest} refers back to its ancestor {child.digest}")
        self._record(digest, "index", index.media_type, expected, children=tuple(c.digest for c in children))
        self._skipped.extend(skipped)
        new: list[Descriptor] = []
        for child in children:
            if child.digest in self._manifests or child.digest in self._expected:
                continue  # shared by two indexes: fetched once
            self._expected[child.digest] = _Expected(child, digest, expected.depth + 1)
            new.append(child)
        return new

    def add_image(self, digest: str, manifest: ImageManifest) -> list[BlobItem]:
        """Record an image manifest; return its blobs not already in the plan, to fetch."""
        expected = self._expect(digest, "image")
        image = plan_image(manifest, digest)
        sizes = {d: b.size for d, b in self._blobs.items()}
        for blob in image.blobs():
            known = sizes.setdefault(blob.digest, blob.size)
            if known != blob.size:
                raise PlanError(f"blob {blob.digest} is listed with sizes {known} and {blob.size}")
        self._record(digest, "image", manifest.media_type, expected, config=image.config, layers=image.layers)
        self._skipped.extend(image.skipped)
        new: list[BlobItem] = []
        for blob in image.blobs():
            users = self._blob_users.setdefault(blob.digest, [])
            if digest not in users:
                users.append(digest)
            if blob.digest not in self._blobs:
                self._blobs[blob.digest] = blob
                new.append(blob)
        return new

    def _record(
        self,
        digest: str,
        kind: ManifestKind,
        media_type: str,
        expected: _Expected,
        *,
        config: BlobItem | None = None,
        layers: tuple[BlobItem, ...] = (),
        children: tuple[str, ...] = (),
    ) -> None:
        del self._expected[digest]
        d = expected.descriptor
        self._manifests[digest] = PlannedManifest(
            digest=digest,
            kind=kind,
            media_type=media_type,
            size=d.size if d is not None else self.root_size,
            platform=d.platform if d is not None else None,
            depth=expected.depth,
            parent=expected.parent,
            config=config,
            layers=layers,
            children=children,
        )

    @property
    def root(self) -> PlannedManifest | None:
        return self._manifests.get(self.root_digest)

    @property
    def manifests(self) -> list[PlannedManifest]:
        """Every manifest planned so far, root first, in the order they were added."""
        return list(self._manifests.values())

    @property
    def child_manifests(self) -> list[PlannedManifest]:
        return [m for m in self._manifests.values() if m.digest != self.root_digest]

    @property
    def pending(self) -> list[Descriptor]:
        """Children returned by `add_index` whose manifests have not been added yet."""
        return [e.descriptor for e in self._expected.values() if e.descriptor is not None]

    @property
    def complete(self) -> bool:
        return not self._expected

    @property
    def blobs(self) -> list[BlobItem]:
        """Unique blobs, first-seen order; `manifest_digest` is the first manifest that named it."""
        return list(self._blobs.values())

    def manifests_using(self, blob_digest: str) -> list[str]:
        return list(self._blob_users.get(blob_digest, []))

    @property
    def skipped(self) -> list[Skipped]:
        return list(self._skipped)

    @property
    def blob_bytes(self) -> int:
        return sum(b.size for b in self._blobs.values())

    @property
    def manifest_bytes(self) -> int:
        return sum(m.size for m in self._manifests.values())

    @property
    def total_bytes(self) -> int:
        """Bytes of everything the plan makes complete: planned manifests (root included) and unique blobs."""
        return self.manifest_bytes + self.blob_bytes
