"""One image made complete: event -> route -> resolve -> plan -> fetch -> sink -> result to emit.

Manifests are resolved one after the other (a few KiB each, and an index's children are only known after the
index is parsed); blobs then go to a shared pool in parallel, each streamed from the upstream straight into
the sink, verified before it becomes visible."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from layerfill.config.routes import Route, find_route
from layerfill.config.settings import Settings
from layerfill.oci import mediatypes
from layerfill.oci.manifest import ImageIndex, ImageManifest, parse_manifest
from layerfill.oci.plan import BlobItem, Plan, PlatformPolicy
from layerfill.oci.reference import (
    InvalidReference,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag_or_digest,
)
from layerfill.remote.blob import BlobStream
from layerfill.remote.client import RegistryClient
from layerfill.serde import events
from layerfill.sinks.base import BlobSpec, Sink, StoreResult
from layerfill.state.records import BlobRecord

from . import metrics
from .errors import PermanentError
from .referrers import ReferrerChecker
from .resolve import resolve_manifest

log = logging.getLogger("layerfill.fetcher")


@dataclass
class ItemResult:
    digest: str
    size: int
    media_type: str
    kind: str  # manifest | config | layer
    manifest_digest: str
    outcome: str
    bytes_fetched: int


@dataclass
class FillResult:
    event: dict[str, Any]
    route: Route
    plan: Plan
    items: list[ItemResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=events.utc_now)
    completed_at: datetime | None = None
    referrers: dict[str, Any] | None = None  # supply-chain artifact counts (consumers/fetcher/referrers.py)

    @property
    def fetched_bytes(self) -> int:
        return sum(i.bytes_fetched for i in self.items)

    def layer_cached(self) -> list[dict[str, Any]]:
        ev = self.event
        return [
            events.layer_cached(
                caused_by=ev["event_id"],
                registry=ev["registry"],
                repository=ev["repository"],
                manifest_digest=i.manifest_digest,
                digest=i.digest,
                size=i.size,
                media_type=i.media_type,
                kind=i.kind,
                outcome=i.outcome,
                bytes_fetched=i.bytes_fetched,
                occurred_at=self.completed_at,
            )
            for i in self.items
        ]

    def image_cached(self) -> dict[str, Any]:
        ev, plan = self.event, self.plan
        manifests = []
        for m in plan.manifests:
            if m.kind != "image" or m.config is None:
                continue
            manifests.append(
                events.cached_manifest(
                    digest=m.digest,
                    media_type=m.media_type,
                    platform=events.platform(m.platform.os, m.platform.architecture, m.platform.variant)
                    if m.platform
                    else None,
                    config=events.blob_ref(m.config.digest, m.config.size, m.config.media_type),
                    layers=[events.blob_ref(b.digest, b.size, b.media_type) for b in m.layers],
                )
            )
        skipped = [events.skipped_item(s.digest, _skip_reason(str(s.reason)), _skip_detail(s)) for s in plan.skipped]
        return events.image_cached(
            caused_by=ev["event_id"], registry=ev["registry"], repository=ev["repository"], digest=plan.root_digest,
            media_type=plan.root.media_type, reference=ev.get("reference"), manifests=manifests, skipped=skipped,
            total_bytes=plan.total_bytes, fetched_bytes=self.fetched_bytes, started_at=self.started_at,
            completed_at=self.completed_at, referrers=self.referrers,
        )  # fmt: skip

    def blob_records(self) -> list[BlobRecord]:
        return [
            BlobRecord(i.digest, i.size, i.media_type, i.kind, i.manifest_digest, i.outcome)  # type: ignore[arg-type]
            for i in self.items
        ]


def _skip_reason(reason: str) -> str:
    return reason if reason in events.SKIP_REASONS else "unknown" if "unknown" in events.SKIP_REASONS else reason


def _skip_detail(s: Any) -> str | None:
    parts = [f"media_type={s.media_type}"] if s.media_type else []
    if getattr(s, "platform", None):
        parts.append(f"platform={s.platform}")
    return ", ".join(parts) or None


class Resources:
    """Upstream clients and sinks, one per route, shared by every fill of the process."""

    def __init__(self, settings: Settings, make_sink: Callable[[Route], Sink]) -> None:
        self.settings = settings
        self._make_sink = make_sink
        self._clients: dict[tuple, RegistryClient] = {}
        self._sinks: dict[tuple, Sink] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(route: Route) -> tuple:
        return (route.registry, route.repository_prefix)

    def client(self, route: Route) -> RegistryClient:
        with self._lock:
            c = self._clients.get(self._key(route))
            if c is None:
                cfg = self.settings.fetcher
                creds = None
                if route.username and route.password:
                    creds = (route.username, route.password.get_secret_value())
                c = RegistryClient(
                    route.upstream_url,
                    credentials=creds,
                    max_concurrency=route.max_concurrency,
                    credential_hosts=route.credential_hosts,
                    timeout=(cfg.upstream_connect_timeout_s, cfg.upstream_read_timeout_s),
                )
                self._clients[self._key(route)] = c
            return c

    def sink(self, route: Route) -> Sink:
        with self._lock:
            s = self._sinks.get(self._key(route))
            if s is None:
                s = self._make_sink(route)
                self._sinks[self._key(route)] = s
            return s

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        for s in self._sinks.values():
            s.close()


class ImageFiller:
    def __init__(self, settings: Settings, resources: Resources, blob_pool: Executor,
                 referrers: ReferrerChecker | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.resources = resources
        self.blob_pool = blob_pool
        self.referrers = referrers

    @staticmethod
    def validate(event: dict[str, Any]) -> None:
        """Every field the fill uses, known good (InvalidReference naming the bad one otherwise): a producer that
        skipped validation, or a hand-written record, gets a dead letter, never a request or a storage key."""
        validate_registry(event["registry"])
        validate_repository(event["repository"])
        validate_digest(event["digest"])
        if event.get("reference") is not None:
            validate_tag_or_digest(event["reference"])
        media_type = event.get("media_type")
        if media_type is not None and not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
            raise InvalidReference("media_type", media_type, "not an image manifest or index type")

    def route_for(self, event: dict[str, Any]) -> Route:
        self.validate(event)
        return find_route(self.settings.routes, event["registry"], event["repository"])

    def fill(self, event: dict[str, Any]) -> FillResult:
        route = self.route_for(event)
        repository = event["repository"]
        upstream_repo = route.upstream_repository(repository)
        client = self.resources.client(route)
        sink = self.resources.sink(route)
        root = resolve_manifest(client, upstream_repo, event["digest"], event.get("manifest"), event.get("media_type"))
        plan = Plan(root.digest, len(root.data), PlatformPolicy.parse(route.platforms))
        result = FillResult(event=event, route=route, plan=plan)

        # Manifests first, breadth-first: the root, then every child the platform policy keeps.
        pending: list[tuple[str, bytes, str | None, bool]] = [(root.digest, root.data, root.media_type, True)]
        blobs: list[BlobItem] = []
        while pending:
            digest, data, media_type, is_root = pending.pop(0)
            doc = parse_manifest(data, media_type, max_entries=self.settings.fetcher.max_layers)
            stored = sink.store_manifest(repository, digest, doc.media_type, data)
            metrics.count_item("manifest", stored.outcome, stored.bytes_fetched)
            if not is_root:
                result.items.append(
                    ItemResult(
                        digest,
                        len(data),
                        doc.media_type,
                        "manifest",
                        plan.root_digest,
                        stored.outcome,
                        stored.bytes_fetched,
                    )
                )
            if isinstance(doc, ImageIndex):
                for child in plan.add_index(digest, doc):
                    got = resolve_manifest(client, upstream_repo, child.digest)
                    if len(got.data) != child.size:
                        raise DescriptorSizeMismatch(child.digest, child.size, len(got.data), "manifest")
                    pending.append((child.digest, got.data, got.media_type or child.media_type, False))
            elif isinstance(doc, ImageManifest):
                blobs.extend(plan.add_image(digest, doc))

        # Blobs in parallel; the pool is shared by all images, the client limits per-upstream concurrency.
        futures: list[tuple[BlobItem, Future[StoreResult]]] = []
        for item in blobs:
            futures.append(
                (item, self.blob_pool.submit(self._store_blob, client, sink, repository, upstream_repo, item))
            )
        first_error: BaseException | None = None
        for item, fut in futures:
            try:
                stored = fut.result()
            except BaseException as exc:  # keep waiting for the others: none may outlive this fill
                first_error = first_error or exc
                continue
            result.items.append(
                ItemResult(
                    item.digest,
                    item.size,
                    item.media_type,
                    item.kind,
                    item.manifest_digest,
                    stored.outcome,
                    stored.bytes_fetched,
                )
            )
        if first_error is not None:
            raise first_error
        if self.referrers is not None:  # the image is complete: its signatures, attestations, SBOMs follow
            subjects = [m.digest for m in plan.manifests if m.kind == "image" or m.digest == plan.root_digest]
            result.referrers = self.referrers.after_fill(route, client, sink, event, upstream_repo, subjects)
        result.completed_at = events.utc_now()
        return result

    @staticmethod
    def _store_blob(
        client: RegistryClient, sink: Sink, repository: str, upstream_repo: str, item: BlobItem
    ) -> StoreResult:
        with metrics.INFLIGHT_BLOBS.track_inprogress():
            stored = sink.store_blob(
                repository,
                BlobSpec(item.digest, item.size, item.media_type),
                lambda: _open_checked(client, upstream_repo, item),
            )
        metrics.count_item(item.kind, stored.outcome, stored.bytes_fetched)
        return stored


class DescriptorSizeMismatch(PermanentError):
    """The upstream serves a blob or child manifest at a size other than the one its descriptor states. Content is
    addressed by digest, so the size cannot vary: the manifest lies, and fetching again cannot help."""

    def __init__(self, digest: str, declared: int, served: int, what: str = "blob") -> None:
        super().__init__(f"{what} {digest}: its descriptor says {declared} bytes but the upstream serves {served}")


@contextmanager
def _open_checked(client: RegistryClient, upstream_repo: str, item: BlobItem) -> Iterator[BlobStream]:
    """The blob stream, refused before a byte is read when its Content-Length contradicts the descriptor."""
    with client.open_blob(upstream_repo, item.digest) as blob:
        if blob.size is not None and blob.size != item.size:
            raise DescriptorSizeMismatch(item.digest, item.size, blob.size)
        yield blob
