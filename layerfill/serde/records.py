"""The Avro event records (``schemas/*.avsc``) as frozen dataclasses: one class per record, fields in the schema's
order, with its names, types and defaults (tests/unit/test_serde_records.py proves they match the schemas).

A record is validated once, when it is built (decoded, or made by a producer): enum symbols, non-negative counts,
timezone-aware timestamps. ``to_avro`` gives the plain value the codec writes, so the bytes on the wire are those
the dict builders of ``layerfill.serde.events`` give; ``from_avro`` reads what the codec decoded.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, ClassVar, Self

from . import events


def _check(record: Record) -> None:
    for name, check in _checks(type(record)):
        check(name, getattr(record, name))


@cache
def _checks(cls: type) -> tuple[tuple[str, Callable[[str, Any], Any]], ...]:
    """The validations of a record class's fields, worked out once per class (decoding is on the hot path)."""
    found: list[tuple[str, Callable[[str, Any], Any]]] = []
    for f in dataclasses.fields(cls):
        symbols = f.metadata.get("symbols")
        if symbols is not None:
            found.append((f.name, lambda name, v, allowed=symbols: events._symbol(name, v, allowed)))
        elif f.metadata.get("count"):
            found.append((f.name, lambda name, v: v is None or events._count(name, v)))
        elif f.metadata.get("timestamp"):
            found.append((f.name, _timestamp))
    return tuple(found)


def _timestamp(name: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got None")
    events._aware(name, value)


def _symbols(*path: str) -> dict[str, Any]:
    return {"symbols": events._symbols(*path)}


_COUNT = {"count": True}
_TIMESTAMP = {"timestamp": True}


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


@cache
def _converters(cls: type) -> dict[str, Callable[[Any], Any] | None]:
    """Per field of a record class, how a decoded value becomes the field's value (None: as it is)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _converter(hints[f.name]) for f in dataclasses.fields(cls)}


def _converter(tp: Any) -> Callable[[Any], Any] | None:
    """Nested records become their classes, arrays tuples; other values are kept as decoded."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType):  # X | None: None stays None
        inner = _converter(next(a for a in args if a is not type(None)))
        return None if inner is None else (lambda v: None if v is None else inner(v))
    if typing.get_origin(tp) is tuple:
        item = _converter(args[0])
        return tuple if item is None else (lambda v: tuple(item(x) for x in v))
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_avro
    return None


def _to(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_avro()
    if isinstance(value, tuple):
        return [_to(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    """Base of every record and nested record."""

    RECORD: ClassVar[str]  # the schema's record name

    def __post_init__(self) -> None:
        _check(self)

    # Read access by field name, as on the dicts records replace: code not yet moved to attributes
    # (consumers/fetcher/fill.py and referrers.py, tests/support builders) reads records and dicts alike.
    def __getitem__(self, name: str) -> Any:
        if name not in _field_names(type(self)):
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in _field_names(type(self)) else default

    def to_avro(self) -> dict[str, Any]:
        """The value the codec encodes: fields in schema order, nested records as dicts, arrays as lists."""
        return {f.name: _to(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_avro(cls, value: typing.Mapping[str, Any]) -> Self:
        """The record of a decoded value (extra keys are refused: the value must be of this record's schema)."""
        convert = _converters(cls)
        return cls(**{name: v if convert[name] is None else convert[name](v) for name, v in value.items()})


# -- ManifestPulled ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManifestPulled(Record):
    RECORD: ClassVar[str] = "ManifestPulled"

    event_id: str
    occurred_at: datetime = dataclasses.field(metadata=_TIMESTAMP)
    source: str = dataclasses.field(metadata=_symbols("ManifestPulled", "source"))
    registry: str
    repository: str
    reference: str | None = None
    digest: str
    media_type: str | None = None
    manifest: bytes | None = None


# -- LayerCached ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerCached(Record):
    RECORD: ClassVar[str] = "LayerCached"

    event_id: str
    caused_by: str
    registry: str
    repository: str
    manifest_digest: str
    digest: str
    size: int = dataclasses.field(metadata=_COUNT)
    media_type: str
    kind: str = dataclasses.field(metadata=_symbols("LayerCached", "kind"))
    outcome: str = dataclasses.field(metadata=_symbols("LayerCached", "outcome"))
    bytes_fetched: int = dataclasses.field(metadata=_COUNT)
    occurred_at: datetime = dataclasses.field(metadata=_TIMESTAMP)


# -- ImageCached ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Platform(Record):
    RECORD: ClassVar[str] = "Platform"

    os: str
    architecture: str
    variant: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlobRef(Record):
    RECORD: ClassVar[str] = "BlobRef"

    digest: str
    size: int = dataclasses.field(metadata=_COUNT)
    media_type: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class CachedManifest(Record):
    RECORD: ClassVar[str] = "CachedManifest"

    digest: str
    media_type: str
    platform: Platform | None = None
    config: BlobRef
    layers: tuple[BlobRef, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SkippedItem(Record):
    RECORD: ClassVar[str] = "SkippedItem"

    digest: str
    reason: str = dataclasses.field(metadata=_symbols("ImageCached", "skipped", "reason"))
    detail: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReferrerCounts(Record):
    RECORD: ClassVar[str] = "ReferrerCounts"

    signatures: int = dataclasses.field(default=0, metadata=_COUNT)
    attestations: int = dataclasses.field(default=0, metadata=_COUNT)
    sboms: int = dataclasses.field(default=0, metadata=_COUNT)
    other: int = dataclasses.field(default=0, metadata=_COUNT)
    bytes: int = dataclasses.field(default=0, metadata=_COUNT)
    skipped: int = dataclasses.field(default=0, metadata=_COUNT)
    error: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageCached(Record):
    RECORD: ClassVar[str] = "ImageCached"

    event_id: str
    caused_by: str
    registry: str
    repository: str
    digest: str
    media_type: str
    reference: str | None = None
    manifests: tuple[CachedManifest, ...]
    skipped: tuple[SkippedItem, ...]
    total_bytes: int = dataclasses.field(metadata=_COUNT)
    fetched_bytes: int = dataclasses.field(metadata=_COUNT)
    started_at: datetime = dataclasses.field(metadata=_TIMESTAMP)
    completed_at: datetime = dataclasses.field(metadata=_TIMESTAMP)
    referrers: ReferrerCounts | None = None


# -- ImageScanned --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class VulnerabilityCounts(Record):
    RECORD: ClassVar[str] = "VulnerabilityCounts"

    unknown: int = dataclasses.field(default=0, metadata=_COUNT)
    negligible: int = dataclasses.field(default=0, metadata=_COUNT)
    low: int = dataclasses.field(default=0, metadata=_COUNT)
    medium: int = dataclasses.field(default=0, metadata=_COUNT)
    high: int = dataclasses.field(default=0, metadata=_COUNT)
    critical: int = dataclasses.field(default=0, metadata=_COUNT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageScanned(Record):
    RECORD: ClassVar[str] = "ImageScanned"

    event_id: str
    caused_by: str
    registry: str
    repository: str
    digest: str
    scanner: str
    scanner_version: str | None = None
    state: str = dataclasses.field(metadata=_symbols("ImageScanned", "state"))
    packages: int | None = dataclasses.field(default=None, metadata=_COUNT)
    vulnerabilities: VulnerabilityCounts | None = None
    report_uri: str | None = None
    error: str | None = None
    occurred_at: datetime = dataclasses.field(metadata=_TIMESTAMP)


# Every record class by schema name: the top-level events and the records nested in them.
BY_NAME: dict[str, type[Record]] = {
    cls.RECORD: cls
    for cls in (
        ManifestPulled,
        LayerCached,
        Platform,
        BlobRef,
        CachedManifest,
        SkippedItem,
        ReferrerCounts,
        ImageCached,
        VulnerabilityCounts,
        ImageScanned,
    )
}
EVENTS: tuple[type[Record], ...] = (ManifestPulled, LayerCached, ImageCached, ImageScanned)
