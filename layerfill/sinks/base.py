"""The storage sink interface the fetcher writes through, and the errors every sink raises.

A sink makes one blob or manifest present in one repository of the cache. It never trusts what it is
handed: digests and sizes are checked before anything becomes visible to the registry.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol, Self

from layerfill.oci.reference import Digest, InvalidReference


class Presence(enum.Enum):
    ABSENT = "absent"
    DATA_ONLY = "data_only"  # blob data exists, but this repository has no link to it
    LINKED = "linked"  # data and this repository's link both exist
    UNKNOWN = "unknown"  # the sink cannot tell (warm-through: a proxy HEAD may answer from upstream)


Outcome = Literal["fetched", "linked", "present"]


@dataclass(frozen=True)
class BlobSpec:
    digest: str
    size: int
    media_type: str | None = None

    def __post_init__(self) -> None:
        Digest.parse(self.digest, "blob.digest")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise InvalidReference("blob.size", self.size, "must be an integer >= 0")
        if self.media_type is not None and not isinstance(self.media_type, str):
            raise InvalidReference("blob.media_type", self.media_type, "must be a string or None")


@dataclass(frozen=True)
class StoreResult:
    outcome: Outcome
    bytes_fetched: int


@dataclass(frozen=True)
class BlobLocation:
    """Where a reader outside layerfill (Clair) GETs a blob of the cache: a URL, and the headers (e.g.
    Authorization) it must send."""

    url: str
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)


class BlobSource(Protocol):
    """Opens the upstream stream lazily: a sink calls it only when it needs the bytes."""

    def __call__(self) -> AbstractContextManager[Iterable[bytes]]: ...


class Sink(ABC):
    name: str
    # Whether `store_tag` works: a sink that writes the storage can; a warm-through one cannot (its proxy
    # answers tags from the upstream).
    stores_tags: bool = False

    @abstractmethod
    def blob_presence(self, repository: str, digest: str) -> Presence: ...

    @abstractmethod
    def store_blob(self, repository: str, blob: BlobSpec, source: BlobSource) -> StoreResult:
        """Make `blob` available in `repository`; errors from `source` propagate unchanged."""

    @abstractmethod
    def manifest_presence(self, repository: str, digest: str) -> Presence: ...

    @abstractmethod
    def store_manifest(self, repository: str, digest: str, media_type: str, data: bytes) -> StoreResult: ...

    def store_tag(self, repository: str, tag: str, digest: str) -> StoreResult:
        """Make `tag` resolve to the manifest `digest` (stored before) in `repository`, as the cache registry
        answers tags when its upstream is down (supply-chain artifact tags such as `sha256-<hex>.sig`)."""
        raise NotImplementedError(f"the {self.name} sink cannot store tags")

    @abstractmethod
    def read_manifest(self, repository: str, digest: str) -> bytes | None:
        """The manifest's bytes as the cache holds them, verified against `digest`; None when the cache has none.
        Reading the cache instead of the upstream spares the upstream a manifest GET (a "pull" on Docker Hub)."""

    def blob_location(self, repository: str, digest: str) -> BlobLocation:
        """Where a reader outside layerfill fetches blob `digest` of `repository` (Clair fetches layers so)."""
        raise NotImplementedError(f"the {self.name} sink cannot tell where a blob is fetched")

    def uploads_in_progress(self, repository: str) -> dict[str, float] | None:
        """Uploads the registry has open in `repository` (upload id -> when it started, epoch seconds), the sign
        of a proxy storing a blob it is serving to a client; None when this sink cannot see them."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SinkError(Exception):
    """A sink failure that retrying will not fix (refused credentials, a 404 from the proxy, ...)."""


class SinkIntegrityError(SinkError):
    """The content did not match its digest or size; nothing was made visible at the final location."""


class SinkUnavailable(SinkError):
    """The storage or registry is down or failing: transient, retry later."""


class BlobNotFound(LookupError):
    """A read of the cache's storage (DistributionSink.read_blob_bytes) found no data for the blob."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} is not in storage")
        self.digest = digest


class BlobTooLarge(ValueError):
    """A read of the cache's storage met a blob larger than the caller's cap (a manifest's, a config's)."""

    def __init__(self, digest: str, size: int, limit: int) -> None:
        super().__init__(f"blob {digest} has {size} bytes, more than the {limit} asked for")
        self.digest = digest
        self.size = size
        self.limit = limit
