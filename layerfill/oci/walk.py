"""The manifest walk: which child manifests and blobs make one pulled manifest complete, under one set of rules.

Pure: the caller does the I/O. It hands `visit` the bytes of the root, then of every child `visit` returns, and
gets back what to read or check next. The fetcher (consumers/fetcher/fill.py) fills by it and the audit
(layerfill/ops/audit.py) judges by it, both with the route's rules (`Settings.walk_rules`), so `layerfill verify`
calls complete exactly what the fetcher makes complete."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from layerfill.oci.manifest import DEFAULT_MAX_ENTRIES, Descriptor, ImageIndex, ImageManifest, parse_manifest
from layerfill.oci.plan import DEFAULT_MAX_INDEX_DEPTH, BlobItem, Plan, PlatformPolicy


@dataclass(frozen=True, slots=True)
class WalkRules:
    """What a route asks of the walk: the platforms an index keeps, and the limits a manifest must stay within."""

    policy: PlatformPolicy = field(default_factory=PlatformPolicy)
    max_entries: int = DEFAULT_MAX_ENTRIES  # layers of a manifest or children of an index
    max_index_depth: int = DEFAULT_MAX_INDEX_DEPTH

    @classmethod
    def parse(cls, platforms: Iterable[str] | None, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> WalkRules:
        """From a route's `platforms` (`os/arch[/variant]`; None or `all` keeps every platform)."""
        return cls(PlatformPolicy.parse(platforms), max_entries)


@dataclass(frozen=True, slots=True)
class Visit:
    """One manifest walked: what it parsed to, and what the walk reaches through it for the first time."""

    document: ImageIndex | ImageManifest
    children: tuple[Descriptor, ...] = ()  # child manifests to visit next (an index's, kept by the policy)
    blobs: tuple[BlobItem, ...] = ()  # config and layers (an image manifest's), each digest once per walk


class ManifestWalk:
    """The walk of one root manifest. `plan` holds everything visited so far (for events and totals)."""

    def __init__(self, root_digest: str, root_size: int, rules: WalkRules | None = None) -> None:
        self.rules = rules or WalkRules()
        self.plan = Plan(root_digest, root_size, self.rules.policy, self.rules.max_index_depth)

    def visit(self, digest: str, data: bytes, media_type: str | None = None) -> Visit:
        """Parse and plan the root or a child returned earlier. Raises ManifestError for bytes that are no
        manifest (or exceed the limits) and PlanError for a tree that cannot be planned."""
        doc = parse_manifest(data, media_type, max_entries=self.rules.max_entries)
        if isinstance(doc, ImageIndex):
            return Visit(doc, children=tuple(self.plan.add_index(digest, doc)))
        return Visit(doc, blobs=tuple(self.plan.add_image(digest, doc)))
