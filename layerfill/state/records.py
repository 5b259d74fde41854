"""Plain values handed to and returned by the state store: enums, inputs checked on construction, rows.

Rows are frozen copies, never live ORM objects, so callers on any thread can keep them after the session
that read them is gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypedDict, TypeVar

from layerfill.oci.reference import validate_digest

MEDIA_TYPE_MAX = 255
TEXT_MAX = 255  # event ids, scanner names and versions, kv keys


class ImageStatus(StrEnum):
    PENDING = "pending"  # seen, fill not started (e.g. a retry is queued)
    FILLING = "filling"
    COMPLETE = "complete"
    FAILED = "failed"
    PARTIAL = "partial"  # finished with some blobs still missing


class BlobKind(StrEnum):
    MANIFEST = "manifest"
    CONFIG = "config"
    LAYER = "layer"


class BlobOutcome(StrEnum):
    FETCHED = "fetched"  # data copied from upstream
    LINKED = "linked"  # data was in storage, only the repository link was written
    PRESENT = "present"  # data and link were both there already


class ScanState(StrEnum):
    PENDING = "pending"
    INDEXED = "indexed"
    INDEX_ERROR = "index_error"
    UNSUPPORTED = "unsupported"


_E = TypeVar("_E", bound=StrEnum)


def coerce_enum(enum: type[_E], value: object, field: str) -> _E:
    """`value` as a member of `enum` (members and their string values both accepted), else ValueError."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise ValueError(f"invalid {field} {value!r}: must be one of {allowed}") from None


def check_text(value: object, field: str, *, max_length: int = TEXT_MAX) -> str:
    """A non-empty string of at most `max_length` characters, else ValueError naming `field`."""
    if not isinstance(value, str):
        raise ValueError(f"invalid {field} {value!r}: must be a string")
    if not value:
        raise ValueError(f"invalid {field}: must not be empty")
    if len(value) > max_length:
        raise ValueError(f"invalid {field}: longer than {max_length} characters")
    return value


def check_optional_text(value: object, field: str, *, max_length: int = TEXT_MAX) -> str | None:
    return None if value is None else check_text(value, field, max_length=max_length)


def check_count(value: object, field: str) -> int:
    """A non-negative int (bool refused: True is not a byte count), else ValueError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid {field} {value!r}: must be an integer")
    if value < 0:
        raise ValueError(f"invalid {field} {value!r}: must not be negative")
    return value


def check_optional_count(value: object, field: str) -> int | None:
    return None if value is None else check_count(value, field)


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One blob or child manifest that a completed image needs, and what the fill did about it."""

    digest: str
    size: int
    media_type: str | None
    kind: BlobKind
    manifest_digest: str  # the (child) manifest that references it
    outcome: BlobOutcome

    def __post_init__(self) -> None:
        validate_digest(self.digest, "blob.digest")
        validate_digest(self.manifest_digest, "blob.manifest_digest")
        check_count(self.size, "blob.size")
        check_optional_text(self.media_type, "blob.media_type", max_length=MEDIA_TYPE_MAX)
        # Frozen: enum coercion has to go through object.__setattr__.
        object.__setattr__(self, "kind", coerce_enum(BlobKind, self.kind, "blob.kind"))
        object.__setattr__(self, "outcome", coerce_enum(BlobOutcome, self.outcome, "blob.outcome"))


@dataclass(frozen=True, slots=True)
class ImageRow:
    id: int
    registry: str
    repository: str
    digest: str
    media_type: str | None
    reference: str | None
    status: ImageStatus
    total_bytes: int
    fetched_bytes: int
    blob_count: int
    first_seen_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    last_error: str | None
    attempts: int
    last_event_id: str | None

    @property
    def is_complete(self) -> bool:
        return self.status is ImageStatus.COMPLETE


@dataclass(frozen=True, slots=True)
class ImageBlobRow:
    digest: str
    size: int
    media_type: str | None
    kind: BlobKind
    manifest_digest: str
    outcome: BlobOutcome


@dataclass(frozen=True, slots=True)
class ScanRow:
    registry: str
    repository: str
    manifest_digest: str
    scanner: str
    scanner_version: str | None
    state: ScanState
    package_count: int | None
    vulnerabilities: dict[str, int] | None  # severity -> count
    report_uri: str | None
    error: str | None
    attempts: int
    requested_at: datetime
    finished_at: datetime | None


class Totals(TypedDict):
    images: dict[str, int]  # every ImageStatus value -> count (zeros included)
    image_count: int
    total_bytes: int  # summed over all images
    fetched_bytes: int
    blobs: int  # distinct blobs ever stored
    blob_bytes: int
    scans: dict[str, int]  # every ScanState value -> count (zeros included)


def check_vulnerabilities(value: object, field: str = "vulnerabilities") -> dict[str, int] | None:
    """severity -> non-negative count, or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"invalid {field} {value!r}: must be a mapping of severity to count")
    result: dict[str, int] = {}
    for severity, count in value.items():
        result[check_text(severity, f"{field} key", max_length=64)] = check_count(count, f"{field}[{severity!r}]")
    return result
