"""What the status page shows, built from state rows and dead letters. Pure: no I/O, unit-tested directly."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from layerfill.cli.status import SEVERITY_ORDER, image_manifests
from layerfill.ops.deadletters import DeadLetter
from layerfill.state.records import BlobKind, ImageBlobRow, ImageRow, ScanRow

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def platform_of_config(config: bytes) -> str | None:
    """`os/architecture[/variant]` from an image config blob; None when it does not say."""
    try:
        doc = json.loads(config)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("os"), str) or not isinstance(doc.get("architecture"), str):
        return None
    text = f"{doc['os']}/{doc['architecture']}"
    return f"{text}/{doc['variant']}" if isinstance(doc.get("variant"), str) and doc["variant"] else text


def severities(counts: Mapping[str, int] | None) -> list[tuple[str, int]]:
    """(severity, count) pairs worst first, zero counts left out; [] when clean or without a report."""
    if not counts:
        return []
    known = [(s, counts[s]) for s in SEVERITY_ORDER if counts.get(s)]
    return known + [(s, n) for s, n in sorted(counts.items()) if s not in SEVERITY_ORDER and n]


def image_path(registry: str, repository: str, digest: str) -> str:
    return "/image/" + quote(f"{registry}/{repository}@{digest}", safe="/:@")


def parse_image_path(rest: str) -> tuple[str, str, str]:
    """`REGISTRY/REPOSITORY@DIGEST` -> its parts; ValueError when it is not that shape."""
    registry, sep, ref = rest.partition("/")
    repository, at, digest = ref.rpartition("@")
    if not (sep and at and registry and repository and digest):
        raise ValueError(f"not REGISTRY/REPOSITORY@DIGEST: {rest!r}")
    return registry, repository, digest


@dataclass(frozen=True)
class ManifestView:
    digest: str
    platform: str | None
    scan: ScanRow | None

    @property
    def scan_state(self) -> str:
        return "not scanned" if self.scan is None else self.scan.state.value

    @property
    def vulnerabilities(self) -> list[tuple[str, int]]:
        return severities(None if self.scan is None else self.scan.vulnerabilities)

    @property
    def vulnerability_text(self) -> str:
        """`high 2, unknown 1`; `none` when matched and clean; `-` without a vulnerability report."""
        if self.scan is None or self.scan.vulnerabilities is None:
            return "-"
        return ", ".join(f"{s} {n}" for s, n in self.vulnerabilities) or "none"


@dataclass(frozen=True)
class ImageView:
    image: ImageRow
    manifests: list[ManifestView]
    blobs: list[ImageBlobRow] = field(default_factory=list)

    @property
    def path(self) -> str:
        return image_path(self.image.registry, self.image.repository, self.image.digest)

    @property
    def platforms(self) -> list[str]:
        return sorted({m.platform for m in self.manifests if m.platform})

    @property
    def scan_states(self) -> list[tuple[str, str]]:
        """(state, label) per distinct scan state of its image manifests: `indexed`, or `indexed 1/2` when mixed."""
        counts = Counter(m.scan_state for m in self.manifests)
        if len(counts) == 1:
            return [(state, state) for state in counts]
        return [(state, f"{state} {n}/{len(self.manifests)}") for state, n in sorted(counts.items())]

    @property
    def packages(self) -> int | None:
        counts = [m.scan.package_count for m in self.manifests if m.scan and m.scan.package_count is not None]
        return sum(counts) if counts else None

    @property
    def vulnerabilities(self) -> list[tuple[str, int]]:
        total: Counter[str] = Counter()
        for m in self.manifests:
            if m.scan is not None and m.scan.vulnerabilities:
                total.update(m.scan.vulnerabilities)
        return severities(total)


def image_view(
    image: ImageRow,
    blobs: Sequence[ImageBlobRow],
    scan_for: Callable[[str], ScanRow | None],
    platform_for: Callable[[str], str | None],
) -> ImageView:
    """An image with each image manifest's platform (from its config blob) and latest scan."""
    configs = {b.manifest_digest: b.digest for b in blobs if b.kind is BlobKind.CONFIG}
    manifests = [
        ManifestView(d, platform_for(configs[d]) if d in configs else None, scan_for(d))
        for d in image_manifests(image, blobs)
    ]
    return ImageView(image, manifests, list(blobs))


@dataclass(frozen=True)
class ScanTotals:
    states: dict[str, int]
    packages: int
    vulnerabilities: list[tuple[str, int]]


def scan_totals(views: Iterable[ImageView]) -> ScanTotals:
    states: Counter[str] = Counter()
    vulns: Counter[str] = Counter()
    packages = 0
    for v in views:
        for m in v.manifests:
            states[m.scan_state] += 1
            if m.scan is not None:
                packages += m.scan.package_count or 0
                vulns.update(m.scan.vulnerabilities or {})
    return ScanTotals(dict(sorted(states.items())), packages, severities(vulns))


@dataclass(frozen=True)
class Cause:
    error_class: str
    count: int
    stage: str
    example: str
    repositories: list[str]


def causes(letters: Iterable[DeadLetter]) -> list[Cause]:
    """Dead letters grouped by error class, most frequent first, with the newest message as the example."""
    groups: dict[str, list[DeadLetter]] = {}
    for d in letters:
        groups.setdefault(d.info.get("error.class") or "unknown", []).append(d)
    out = []
    for name, ds in groups.items():
        newest = max(ds, key=lambda d: (d.timestamp_ms, d.offset))
        repos = sorted({r for r in (d.repository for d in ds) if r})
        stage = newest.info.get("stage") or newest.info.get("group") or "-"
        out.append(Cause(name, len(ds), stage, (newest.info.get("error.message") or "")[:200], repos[:5]))
    return sorted(out, key=lambda c: (-c.count, c.error_class))
