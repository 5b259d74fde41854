"""Supply-chain artifacts travel with the image: after an image is complete, its signatures, attestations and
SBOMs (and theirs, to a bounded depth) are discovered at the upstream and copied into the cache, where clients
look for them (tags for the distribution sink, pulls by tag through the proxy for the registry sink).

Discovery is layerfill.oci.referrers (pure); this module does the requests. A check remembers what each tag
named (state DB, table referrer_checks), so a later check HEADs the tags and GETs only those that moved; a
later pull of a complete image triggers one at most once per image per route's `recheck_interval_s`.

Artifacts are best effort: a failure here is logged and reported in ImageCached, never fails the image; the
check is then not recorded, so the next pull of the image tries again."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from layerfill.config.routes import Route, find_route
from layerfill.kafka.classify import describe
from layerfill.kafka.fingerprint_table import FingerprintTable
from layerfill.kafka.keys import image_fingerprint, image_key
from layerfill.oci.digest import digest_of
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
    classify_descriptor,
    classify_manifest,
    lookups,
    referrer_entries,
    tag_schema_index,
    tag_schema_tag,
)
from layerfill.remote.blob import BlobStream
from layerfill.remote.client import RegistryClient
from layerfill.serde.records import ManifestPulled
from layerfill.sinks.base import BlobSpec, Sink
from layerfill.state.referrer_checks import ReferrerChecks
from layerfill.state.store import StateStore

log = logging.getLogger("layerfill.fetcher.referrers")

REQUESTS = Counter("layerfill_fetcher_referrer_requests_total", "Upstream requests of artifact discovery", ["method"])
ARTIFACTS = Counter(
    "layerfill_fetcher_referrer_artifacts_total", "Supply-chain artifacts by kind and outcome", ["kind", "outcome"]
)
CHECKS = Counter(
    "layerfill_fetcher_referrer_checks_total", "Artifact checks by trigger and result", ["trigger", "result"]
)

ImageKey = tuple[str, str, str]


@dataclass
class SyncResult:
    memory: Memory
    counts: Counts
    requests: Tally[str] = field(default_factory=Tally)  # upstream requests by method: HEAD, GET
    error: str | None = None

    def event_value(self) -> dict[str, Any]:
        """The ImageCached `referrers` field."""
        return {**self.counts.to_dict(), "error": self.error}


class ReferrerSync:
    """One image's artifacts, from the upstream into the sink. Not thread-safe: one per check."""

    def __init__(self, client: RegistryClient, sink: Sink, repository: str, upstream_repo: str,
                 policy: ReferrerPolicy, previous: Memory | None = None) -> None:  # fmt: skip
        self.client = client
        self.sink = sink
        self.repository = repository
        self.upstream_repo = upstream_repo
        self.policy = policy
        self.previous = previous or Memory()
        self.requests: Tally[str] = Tally()
        # Artifacts stored by the last check, by digest: content-addressed, so never fetched again.
        self._known = {a.digest: a for t in self.previous.tags.values() for a in t.artifacts}

    def run(self, subjects: list[str]) -> SyncResult:
        memory = Memory(referrers_api=self.previous.referrers_api, subjects=list(subjects))
        budget = Budget.of(self.policy)
        counts = Counts()
        try:
            self._discover(subjects, memory, budget, counts)
        except Exception as exc:  # best effort: reported, not raised (the image itself is complete)
            log.warning("artifact discovery failed", extra={"repository": self.repository, "error": describe(exc)})
            result = SyncResult(memory, memory.counts(), self.requests, describe(exc))
            result.counts.skipped = counts.skipped
            return result
        final = memory.counts()
        final.skipped = counts.skipped
        return SyncResult(memory, final, self.requests)

    # -- discovery, level by level -------------------------------------------------------------------

    def _discover(self, subjects: list[str], memory: Memory, budget: Budget, counts: Counts) -> None:
        visited = set(subjects)
        level = list(subjects)
        for _ in range(self.policy.max_depth):
            found: list[str] = []
            for subject in level:
                for lookup in lookups(subject, self.policy, referrers_api=memory.referrers_api):
                    if lookup.is_api and memory.referrers_api is False:
                        continue  # learnt from an earlier subject of this check
                    if lookup.tag == tag_schema_tag(subject) and memory.referrers_api is True:
                        continue  # the API answered: the tag schema is not used by this upstream
                    known = self._lookup(lookup, memory, budget, counts)
                    if known is not None:
                        found.extend(a.digest for a in known.artifacts)
            level = [d for d in dict.fromkeys(found) if d not in visited]
            visited.update(level)
            if not level:
                return
        # The deepest level's own artifacts are beyond max_depth: not looked for.
        log.debug("artifact depth limit reached", extra={"repository": self.repository})

    def _lookup(self, lookup: Lookup, memory: Memory, budget: Budget, counts: Counts) -> KnownTag | None:
        if lookup.is_api:
            return self._via_api(lookup, memory, budget, counts)
        assert lookup.tag is not None
        self.requests["HEAD"] += 1
        REQUESTS.labels("HEAD").inc()
        head = self.client.head_manifest(self.upstream_repo, lookup.tag)
        if head is None:
            return None  # no such tag (any the cache holds from earlier stays there)
        known = self.previous.tags.get(lookup.tag)
        if known is not None and known.digest == head.digest:
            # Unchanged since the last check, and everything it named was stored then: no GET at all.
            for a in known.artifacts:
                budget.artifacts += 1
                budget.bytes += a.bytes
                ARTIFACTS.labels(a.kind, "unchanged").inc()
            memory.tags[lookup.tag] = known
            return known
        data, media_type = self._get(head.digest)
        doc = parse_manifest(data, media_type)
        if lookup.kind is not None:  # a cosign tag: the manifest is the artifact
            artifact = self._copy(head.digest, data, doc, lookup, budget, counts)
            tag = KnownTag(head.digest, [artifact] if artifact else [])
        else:  # the referrers tag schema: an index of artifacts
            if not isinstance(doc, ImageIndex):
                raise ValueError(f"referrers tag {lookup.tag} names a {doc.media_type}, not an index")
            # Stored as served (its digest is the upstream's): entries the policy left out stay listed, absent.
            tag = KnownTag(head.digest, self._copy_entries(referrer_entries(doc), budget, counts))
        if not tag.artifacts:
            return None  # nothing admitted: no tag naming content the cache lacks, and no memory of it either
        self.sink.store_manifest(self.repository, head.digest, doc.media_type, data)
        self.sink.store_tag(self.repository, lookup.tag, head.digest)
        memory.tags[lookup.tag] = tag
        return tag

    def _via_api(self, lookup: Lookup, memory: Memory, budget: Budget, counts: Counts) -> KnownTag | None:
        self.requests["GET"] += 1
        REQUESTS.labels("GET").inc()
        got = self.client.get_referrers(self.upstream_repo, lookup.subject)
        if got is None:
            memory.referrers_api = False
            return None
        memory.referrers_api = True
        doc = parse_manifest(got.content, got.media_type)
        if not isinstance(doc, ImageIndex):
            raise ValueError(f"the referrers API answered a {doc.media_type} for {lookup.subject}, not an index")
        entries = referrer_entries(doc)
        artifacts = self._copy_entries(entries, budget, counts)
        kept = {a.digest for a in artifacts}
        tag_name = tag_schema_tag(lookup.subject)
        if not self.sink.stores_tags or not kept:
            # A proxy fetches tags from the upstream, which has none here; the artifacts are warmed by digest.
            tag = KnownTag(digest_of(got.content), artifacts)
            memory.tags[tag_name] = tag
            return tag
        # This cache has no referrers API: clients fall back to the tag schema, so the cache gets that index.
        index = tag_schema_index([e for e in entries if e.digest in kept])
        digest = digest_of(index)
        self.sink.store_manifest(self.repository, digest, doc.media_type, index)
        self.sink.store_tag(self.repository, tag_name, digest)
        tag = KnownTag(digest, artifacts)
        memory.tags[tag_name] = tag
        return tag

    # -- copying -----------------------------------------------------------------------------------

    def _get(self, digest: str) -> tuple[bytes, str]:
        self.requests["GET"] += 1
        REQUESTS.labels("GET").inc()
        got = self.client.get_manifest(self.upstream_repo, digest)
        return got.content, got.media_type

    def _copy_entries(self, entries: list[Descriptor], budget: Budget, counts: Counts) -> list[KnownArtifact]:
        out: list[KnownArtifact] = []
        for entry in entries:
            known = self._known.get(entry.digest)
            if known is not None:  # stored by an earlier check (a tag-schema index that gained an entry)
                budget.artifacts += 1
                budget.bytes += known.bytes
                ARTIFACTS.labels(known.kind, "unchanged").inc()
                out.append(known)
                continue
            announced = classify_descriptor(entry)
            if announced is not None and announced not in self.policy.follow:
                counts.skipped += 1
                ARTIFACTS.labels(announced, "not_followed").inc()
                continue
            if budget.artifacts >= budget.max_artifacts or not budget.fits(entry.size):
                counts.skipped += 1
                ARTIFACTS.labels(announced or "other", "over_budget").inc()
                continue
            data, media_type = self._get(entry.digest)
            if len(data) != entry.size:
                raise ValueError(f"artifact {entry.digest}: descriptor says {entry.size} bytes, served {len(data)}")
            doc = parse_manifest(data, media_type)
            artifact = self._copy(entry.digest, data, doc, None, budget, counts)
            if artifact is not None:
                self.sink.store_manifest(self.repository, entry.digest, doc.media_type, data)
                out.append(artifact)
        return out

    def _copy(self, digest: str, data: bytes, doc: ImageManifest | ImageIndex, via: Lookup | None,
              budget: Budget, counts: Counts) -> KnownArtifact | None:  # fmt: skip
        """Blobs (and, for an index artifact, its manifests) of one artifact into the sink, if the policy and
        the budget admit it. The artifact's own manifest is stored by the caller, after its contents."""
        kind = classify_manifest(doc, via)
        if kind not in self.policy.follow:
            counts.skipped += 1
            ARTIFACTS.labels(kind, "not_followed").inc()
            return None
        children: list[tuple[str, bytes, ImageManifest]] = []
        if isinstance(doc, ImageIndex):
            for child in doc.manifests:
                child_data, child_type = self._get(child.digest)
                child_doc = parse_manifest(child_data, child_type)
                if isinstance(child_doc, ImageManifest):
                    children.append((child.digest, child_data, child_doc))
        blobs = [b for m in ([doc] if isinstance(doc, ImageManifest) else [c[2] for c in children])
                 for b in artifact_blobs(m)]  # fmt: skip
        nbytes = len(data) + sum(len(c[1]) for c in children) + sum(b.size for b in blobs)
        if not budget.admit(nbytes):
            counts.skipped += 1
            ARTIFACTS.labels(kind, "over_budget").inc()
            return None
        for blob in blobs:
            self.sink.store_blob(self.repository, BlobSpec(blob.digest, blob.size, blob.media_type),
                                 lambda b=blob: self._open(b))  # fmt: skip
        for child_digest, child_data, child_doc in children:
            self.sink.store_manifest(self.repository, child_digest, child_doc.media_type, child_data)
        ARTIFACTS.labels(kind, "copied").inc()
        return KnownArtifact(digest, kind, nbytes)

    @contextmanager
    def _open(self, blob: Descriptor) -> Iterator[BlobStream]:
        self.requests["GET"] += 1
        REQUESTS.labels("GET").inc()
        with self.client.open_blob(self.upstream_repo, blob.digest) as stream:
            if stream.size is not None and stream.size != blob.size:
                raise ValueError(
                    f"artifact blob {blob.digest}: descriptor says {blob.size} bytes, served {stream.size}"
                )
            yield stream


class ReferrerChecker:
    """When to check an image's artifacts, and the record of each check (state DB plus an in-process memo).

    After a fill: always (the fill's hook). On a later pull of a complete image: once the route's interval has
    passed since the last check, which the memo answers in the poll thread without touching the database."""

    def __init__(self, state: StateStore | None, clock: Any = time.time, *, maxsize: int = 100_000) -> None:
        self.checks = ReferrerChecks(state) if state is not None else None
        self.clock = clock
        # image fingerprint -> when its next check is due (last checked or claimed + the route's interval; inf when
        # the route never checks): a repeat pull before then is answered from here alone, without even a route
        # lookup (the firehose of pulls of complete images). Up to `fetcher.known_images` entries, in a table whose
        # memory is taken here, not per image (the soak's RSS grew with this map as a dict).
        self._claimed = FingerprintTable(maxsize)
        self._lock = threading.Lock()

    def after_fill(self, route: Route, client: RegistryClient, sink: Sink, event: ManifestPulled,
                   upstream_repo: str, subjects: list[str]) -> dict[str, Any] | None:  # fmt: skip
        """Check the image just completed; the ImageCached `referrers` value (None: the route follows none)."""
        if not route.referrers.enabled:
            return None
        key: ImageKey = (event.registry, event.repository, event.digest)
        with self._lock:
            self._claimed[_fingerprint(key)] = self.clock() + route.referrers.recheck_interval_s
        # No memory of earlier checks: a fill (first, backfill, repair) verifies every artifact in storage.
        result = self._sync(key, route, client, sink, upstream_repo, subjects, None, trigger="fill")
        return result.event_value()

    def next_due(self, image: bytes) -> float:
        """When (on `clock`) a pull of this image (its `image_fingerprint`) is next due a recheck: inf when its route
        never checks, 0 when this process has not claimed it. Lets the fetcher answer repeat pulls before then
        without decoding them."""
        with self._lock:
            due = self._claimed.get(image)
        return 0.0 if due is None else due

    def due(self, settings_routes: list[Route], event: ManifestPulled) -> bool:
        """Cheap (poll thread): whether a pull of this complete image should look for new artifacts; claims it
        so the same image is not checked twice at once."""
        ck = _fingerprint((event.registry, event.repository, event.digest))
        now = self.clock()
        with self._lock:  # an LRU read reorders the cache: never outside the lock (worker threads write it)
            due = self._claimed.get(ck)
        if due is not None and now < due:
            return False
        try:
            route = find_route(settings_routes, event.registry, event.repository)
        except Exception:
            return False
        interval = route.referrers.recheck_interval_s
        with self._lock:
            if not route.referrers.enabled:
                self._claimed[ck] = float("inf")  # never due while this process runs
                return False
            due = self._claimed.get(ck)
            if due is not None and now < due:  # another thread claimed it meanwhile
                return False
            self._claimed[ck] = now + interval
        return True

    def recheck(self, route: Route, client: RegistryClient, sink: Sink, event: ManifestPulled,
                upstream_repo: str) -> None:  # fmt: skip
        """A later pull's check (worker thread): skipped if the state DB says another process checked within
        the interval; otherwise HEADs for what is known, GETs for what moved or is new."""
        key: ImageKey = (event.registry, event.repository, event.digest)
        previous = self._previous(key)
        if previous is not None and self.checks is not None:
            age = self.clock() - previous[0]
            if age < route.referrers.recheck_interval_s:
                with self._lock:
                    self._claimed[_fingerprint(key)] = previous[0] + route.referrers.recheck_interval_s
                CHECKS.labels("pull", "not_due").inc()
                return
        subjects = (previous[1].subjects if previous is not None else None) or [event.digest]
        self._sync(key, route, client, sink, upstream_repo, subjects, previous, trigger="pull")

    def _previous(self, key: ImageKey) -> tuple[float, Memory] | None:
        if self.checks is None:
            return None
        try:
            row = self.checks.get(*key)
        except Exception:
            log.exception("reading the last artifact check failed")
            return None
        return None if row is None else (row.checked_at.timestamp(), row.memory)

    def _sync(self, key: ImageKey, route: Route, client: RegistryClient, sink: Sink, upstream_repo: str,
              subjects: list[str], previous: tuple[float, Memory] | None, *, trigger: str) -> SyncResult:  # fmt: skip
        sync = ReferrerSync(client, sink, key[1], upstream_repo, route.referrers, previous[1] if previous else None)
        result = sync.run(subjects)
        extra = {"repository": key[1], "digest": key[2], "trigger": trigger, **result.counts.to_dict(),
                 "heads": result.requests["HEAD"], "gets": result.requests["GET"]}  # fmt: skip
        if result.error is not None:
            CHECKS.labels(trigger, "failed").inc()
            with self._lock:
                self._claimed.pop(_fingerprint(key))  # the next pull tries again
            log.warning("artifact check failed", extra={**extra, "error": result.error})
            return result
        CHECKS.labels(trigger, "done").inc()
        log.info("artifacts checked", extra=extra)
        if self.checks is not None:
            try:
                self.checks.record(*key, result.memory, result.counts)
            except Exception:
                log.exception("recording the artifact check failed")
        return result


def _fingerprint(key: ImageKey) -> bytes:
    return image_fingerprint(image_key(*key))
