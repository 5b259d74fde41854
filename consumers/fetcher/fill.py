"""One image made complete: event -> route -> resolve -> plan -> fetch -> sink -> result to emit.

Manifests are resolved one after the other (a few KiB each, and an index's children are only known after the
index is parsed), from the cache before the upstream; blobs then go to a shared pool in parallel, each streamed
from the upstream straight into the sink, verified before it becomes visible. Layers a client's pull is likely
bringing into the cache are waited for first (docs/upstream-cost.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from layerfill import __version__
from layerfill.config.routes import Route, find_route
from layerfill.config.settings import Settings
from layerfill.kafka.classify import PermanentError
from layerfill.oci import mediatypes
from layerfill.oci.manifest import Descriptor
from layerfill.oci.plan import BlobItem, Plan
from layerfill.oci.reference import (
    InvalidReference,
    validate_digest,
    validate_registry,
    validate_repository,
    validate_tag_or_digest,
)
from layerfill.oci.walk import ManifestWalk
from layerfill.remote.blob import BlobStream
from layerfill.remote.client import RegistryClient
from layerfill.remote.transport.metered import upstream_reason
from layerfill.serde import events
from layerfill.serde.records import ImageCached, LayerCached, ManifestPulled
from layerfill.sinks.base import BlobSpec, Presence, Sink, StoreResult
from layerfill.state.records import BlobRecord

from . import metrics
from .deferral import wait_for_client
from .leases import BlobLeases
from .referrers import ReferrerChecker
from .resolve import ResolvedManifest, resolve_manifest

log = logging.getLogger("layerfill.fetcher")

# The upstream's access log tells layerfill's requests from the proxy's and the clients' by this.
USER_AGENT = f"layerfill/{__version__} (fetcher)"


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
    event: ManifestPulled
    route: Route
    plan: Plan
    items: list[ItemResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=events.utc_now)
    completed_at: datetime | None = None
    referrers: dict[str, Any] | None = None  # supply-chain artifact counts (consumers/fetcher/referrers.py)

    @property
    def fetched_bytes(self) -> int:
        return sum(i.bytes_fetched for i in self.items)

    def layer_cached(self) -> list[LayerCached]:
        ev = self.event
        return [
            LayerCached.from_avro(
                events.layer_cached(  # derives the event id, as every LayerCached's
                    caused_by=ev.event_id,
                    registry=ev.registry,
                    repository=ev.repository,
                    manifest_digest=i.manifest_digest,
                    digest=i.digest,
                    size=i.size,
                    media_type=i.media_type,
                    kind=i.kind,
                    outcome=i.outcome,
                    bytes_fetched=i.bytes_fetched,
                    occurred_at=self.completed_at,
                )
            )
            for i in self.items
        ]

    def image_cached(self) -> ImageCached:
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
        return ImageCached.from_avro(events.image_cached(  # derives the event id, as every ImageCached's
            caused_by=ev.event_id, registry=ev.registry, repository=ev.repository, digest=plan.root_digest,
            media_type=plan.root.media_type, reference=ev.reference, manifests=manifests, skipped=skipped,
            total_bytes=plan.total_bytes, fetched_bytes=self.fetched_bytes, started_at=self.started_at,
            completed_at=self.completed_at, referrers=self.referrers,
        ))  # fmt: skip

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
                    user_agent=USER_AGENT,
                    metrics_route=route.label,
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


@dataclass
class FillContext:
    """What every step of one fill needs: the event, its route, where to read and write, and why."""

    event: ManifestPulled
    route: Route
    client: RegistryClient
    sink: Sink
    reason: str  # fill | repair | backfill: the metrics' reason, and whether a client's pull may be in progress
    plan: Plan | None = None

    @property
    def repository(self) -> str:
        return self.event.repository

    @property
    def upstream_repository(self) -> str:
        return self.route.upstream_repository(self.repository)

    @property
    def pulled_at(self) -> float:
        """When the client pulled the manifest (epoch s); now when the event does not say."""
        return self.event.occurred_at.timestamp()


class ImageFiller:
    def __init__(
        self,
        settings: Settings,
        resources: Resources,
        blob_pool: Executor,
        leases: BlobLeases | None = None,
        stopping: Callable[[], bool] = lambda: False,
        referrers: ReferrerChecker | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.blob_pool = blob_pool
        self.leases = leases
        self.stopping = stopping
        self.referrers = referrers

    @staticmethod
    def validate(event: ManifestPulled) -> None:
        """Every field the fill uses, known good (InvalidReference naming the bad one otherwise): a producer that
        skipped validation, or a hand-written record, gets a dead letter, never a request or a storage key. The
        stage calls it once, in triage, before the state DB or a log line sees the event's fields."""
        validate_registry(event.registry)
        validate_repository(event.repository)
        validate_digest(event.digest)
        if event.reference is not None:
            validate_tag_or_digest(event.reference)
        media_type = event.media_type
        if media_type is not None and not (mediatypes.is_manifest(media_type) or mediatypes.is_index(media_type)):
            raise InvalidReference("media_type", media_type, "not an image manifest or index type")

    def route_for(self, event: ManifestPulled) -> Route:
        return find_route(self.settings.routes, event.registry, event.repository)

    # -- the steps: route -> resolve -> plan + manifests -> blobs -> result ---------------------------

    def fill(self, event: ManifestPulled, reason: str = "fill") -> FillResult:
        """Make the pulled image complete; `event` was validated (`validate`) by the caller."""
        route = self.route_for(event)
        ctx = FillContext(event, route, self.resources.client(route), self.resources.sink(route), reason)
        with upstream_reason(reason):
            root = self.resolve_root(ctx)
            walk = ManifestWalk(root.digest, len(root.data), self.settings.walk_rules(route))
            ctx.plan = walk.plan
            result = FillResult(event=event, route=route, plan=ctx.plan)
            blobs = self.store_manifests(ctx, walk, root, result)
            self.store_blobs(ctx, blobs, result)
            if self.referrers is not None:  # the image is complete: its signatures, attestations, SBOMs follow
                self.follow_referrers(ctx, result)
        result.completed_at = events.utc_now()
        return result

    def follow_referrers(self, ctx: FillContext, result: FillResult) -> None:
        plan = ctx.plan
        assert plan is not None and self.referrers is not None
        subjects = [m.digest for m in plan.manifests if m.kind == "image" or m.digest == plan.root_digest]
        result.referrers = self.referrers.after_fill(
            ctx.route, ctx.client, ctx.sink, ctx.event, ctx.upstream_repository, subjects
        )

    def resolve_root(self, ctx: FillContext) -> ResolvedManifest:
        """The pulled manifest: from the event, else the cache's copy (the proxy has just stored it), else the
        upstream."""
        digest = ctx.event.digest
        resolved = resolve_manifest(
            digest,
            cache=lambda: ctx.sink.read_manifest(ctx.repository, digest),
            upstream=lambda: ctx.client.get_manifest(ctx.upstream_repository, digest),
            event_bytes=ctx.event.manifest,
            event_media_type=ctx.event.media_type,
        )
        metrics.MANIFEST_SOURCES.labels(ctx.route.label, resolved.source).inc()
        return resolved

    def resolve_children(
        self, ctx: FillContext, children: list[Descriptor]
    ) -> list[tuple[Descriptor, ResolvedManifest]]:
        """The children of an index. A client pulls its platform's child right after the index, so one missing
        from the cache is given until `grace_s` after the index pull to appear there (a fill only) before it
        costs an upstream GET."""
        cached = {c.digest: ctx.sink.read_manifest(ctx.repository, c.digest) for c in children}
        missing = [c for c in children if cached[c.digest] is None]
        policy = ctx.route.upstream_cost
        if missing and ctx.reason == "fill" and policy.defer_layers:
            deadline = min(ctx.pulled_at + policy.grace_s, time.time() + policy.max_wait_s)
            while missing and time.time() < deadline and not self.stopping():
                time.sleep(min(policy.poll_s, max(0.0, deadline - time.time())))
                for c in list(missing):
                    cached[c.digest] = ctx.sink.read_manifest(ctx.repository, c.digest)
                    if cached[c.digest] is not None:
                        missing.remove(c)
        return [(c, self.resolve_child(ctx, c, cached[c.digest])) for c in children]

    def resolve_child(self, ctx: FillContext, child: Descriptor, cached: bytes | None = None) -> ResolvedManifest:
        """A child of an index: the cache's copy when a client pulled that platform, else one upstream GET (its
        bytes are needed to plan its blobs, which a HEAD cannot tell)."""
        resolved = resolve_manifest(
            child.digest,
            cache=lambda: cached if cached is not None else ctx.sink.read_manifest(ctx.repository, child.digest),
            upstream=lambda: ctx.client.get_manifest(ctx.upstream_repository, child.digest),
        )
        metrics.MANIFEST_SOURCES.labels(ctx.route.label, resolved.source).inc()
        if len(resolved.data) != child.size:
            raise DescriptorSizeMismatch(child.digest, child.size, len(resolved.data), "manifest")
        return resolved

    def store_manifests(
        self, ctx: FillContext, walk: ManifestWalk, root: ResolvedManifest, result: FillResult
    ) -> list[BlobItem]:
        """Walk and store manifests breadth-first (the root, then every child the route's rules keep); the blobs
        of every image manifest walked."""
        plan = walk.plan
        pending: list[tuple[str, bytes, str | None, bool]] = [(root.digest, root.data, root.media_type, True)]
        blobs: list[BlobItem] = []
        while pending:
            digest, data, media_type, is_root = pending.pop(0)
            visit = walk.visit(digest, data, media_type)
            doc = visit.document
            stored = ctx.sink.store_manifest(ctx.repository, digest, doc.media_type, data)
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
            for child, got in self.resolve_children(ctx, list(visit.children)):
                pending.append((child.digest, got.data, got.media_type or child.media_type, False))
            blobs.extend(visit.blobs)
        return blobs

    def store_blobs(self, ctx: FillContext, blobs: list[BlobItem], result: FillResult) -> None:
        """What is cheap at once (links to data already stored); blobs missing from storage after a bounded wait
        for the client's pull that is likely bringing them (defer.py), each fetched at most once across the group
        (leases.py). Blobs go to the shared pool in parallel."""
        stored, unknown, deferred = self.triage_blobs(ctx, blobs)
        futures = [(item, self._submit(ctx, item, stored=True)) for item in stored]
        futures += [(item, self._submit(ctx, item)) for item in unknown]
        if deferred:
            missing = self.wait_for_client(ctx, deferred)
            futures += [(item, self._submit(ctx, item, stored=item.digest not in missing)) for item in deferred]
        self._collect(futures, result)

    def triage_blobs(
        self, ctx: FillContext, blobs: list[BlobItem]
    ) -> tuple[list[BlobItem], list[BlobItem], list[BlobItem]]:
        """(data stored, not looked at, deferred). A blob is deferred when a client's pull may be bringing it (a
        fill, not a repair or backfill) and storage does not hold its data. Configs too: the client GETs them
        like layers, and waiting for them costs nothing the layers' wait does not already cost."""
        if ctx.reason != "fill" or not ctx.route.upstream_cost.defer_layers:
            return [], blobs, []
        stored: list[BlobItem] = []
        deferred: list[BlobItem] = []
        for item in blobs:
            absent = ctx.sink.blob_presence(ctx.repository, item.digest) in (Presence.ABSENT, Presence.UNKNOWN)
            (deferred if absent else stored).append(item)
        return stored, [], deferred

    def wait_for_client(self, ctx: FillContext, deferred: list[BlobItem]) -> frozenset[str]:
        """Wait while the client's pull progresses; the digests still missing afterwards."""
        policy = ctx.route.upstream_cost
        outcome = wait_for_client(ctx.sink, ctx.repository, {i.digest for i in deferred}, policy, ctx.pulled_at,
                                  stopping=self.stopping)  # fmt: skip
        if outcome.waited:
            sizes = {i.digest: i.size for i in deferred}
            label = ctx.route.label
            for digest in outcome.delivered:
                metrics.BLOBS_DEFERRED.labels(label, "delivered_by_proxy").inc()
                metrics.SAVED_BYTES.labels(label).inc(sizes[digest])
            for _ in outcome.missing:
                metrics.BLOBS_DEFERRED.labels(label, "fetched_after_wait").inc()
            log.info("waited for the client's pull", extra={"repository": ctx.repository, "seconds": round(outcome.seconds, 3),
                     "delivered": len(outcome.delivered), "missing": len(outcome.missing)})  # fmt: skip
        return outcome.missing

    def _submit(self, ctx: FillContext, item: BlobItem, stored: bool = False) -> Future[StoreResult]:
        return self.blob_pool.submit(self._store_blob, ctx, item, stored)

    @staticmethod
    def _collect(futures: list[tuple[BlobItem, Future[StoreResult]]], result: FillResult) -> None:
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

    def _store_blob(self, ctx: FillContext, item: BlobItem, stored_data: bool = False) -> StoreResult:
        """Link a blob whose data is stored; else fetch it under its lease (or link it once another fetcher has)."""
        sink, repository = ctx.sink, ctx.repository
        spec = BlobSpec(item.digest, item.size, item.media_type)

        def store() -> StoreResult:
            return sink.store_blob(repository, spec, lambda: _open_checked(ctx.client, ctx.upstream_repository, item))

        with metrics.INFLIGHT_BLOBS.track_inprogress(), upstream_reason(ctx.reason):
            if self.leases is None or stored_data:
                stored = store()
            else:
                policy = ctx.route.upstream_cost
                stored = self.leases.exclusive(
                    item.digest,
                    policy.lease_ttl_s,
                    policy.poll_s,
                    stored=lambda: sink.blob_presence(repository, item.digest) in (Presence.DATA_ONLY, Presence.LINKED),
                    fetch=store,
                    link=store,  # the sink finds the data and writes only the link
                    waited=lambda: metrics.LEASE_WAITS.labels(ctx.route.label).inc(),
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
