"""Shared pieces of the infrastructure fault drills (S3 outage, Kafka restart, fetcher kills, state DB loss):
random images pushed to the upstream, one ManifestPulled each with an event id of ours, and the end-state
checks every drill makes once the fault is over:

- every published event has exactly one terminal record, read_committed: one ImageCached and one LayerCached
  per blob when the image completed, or one dead letter (and no output) when it did not;
- storage holds nothing wrong: each completed image's blobs re-hash to their digests at their final keys, its
  links are written, and no multipart upload is left open at any of its blobs' keys;
- the fetcher group committed every input offset (nothing left to redeliver).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.producers.publisher import Publisher
from tests.support.cachestore import CacheStorage
from tests.support.images import PushedImage, push_random_image
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Sent:
    """One ManifestPulled we published, and the image it names."""

    event_id: str
    image: PushedImage


def push_images(
    devstack: DevStack, prefix: str, workdir: Path, sizes: Iterable[int], threads: int = 4
) -> list[PushedImage]:
    """One random single-layer image per size, `<prefix>/img<i>`, pushed to the upstream (skopeo, in parallel)."""

    def push(i_size: tuple[int, int]) -> PushedImage:
        i, size = i_size
        return push_random_image(devstack.upstream_registry, f"{prefix}/img{i}", workdir / f"img{i}", size)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(push, enumerate(sizes)))


class EventSender:
    """Publishes ManifestPulled records (acknowledged by Kafka) and remembers each one."""

    def __init__(self, p: Pipeline, registry: str) -> None:
        self.p = p
        self.registry = registry
        self.publisher = Publisher(p.settings)
        self.sent: list[Sent] = []

    def send(self, image: PushedImage, event_id: str | None = None) -> Sent:
        eid = event_id or str(uuid.uuid4())
        self.publisher.publish_manifest_pulled(
            registry=self.registry, repository=image.repository, digest=image.digest, reference="1", event_id=eid
        )
        s = Sent(eid, image)
        self.sent.append(s)
        return s

    def close(self) -> None:
        self.publisher.close()


@dataclass
class Observed:
    """What the run committed (read_committed), by the event id that caused it."""

    image_cached: dict[str, list[dict[str, Any]]]
    layer_cached: dict[str, list[dict[str, Any]]]
    dead: dict[str, list[dict[str, str]]]  # DLQ headers
    retries: int  # records on the retry topic

    def terminal(self) -> set[str]:
        return set(self.image_cached) | set(self.dead)


def _by(records: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r[key], []).append(r)
    return out


def observe(p: Pipeline) -> Observed:
    dead: dict[str, list[dict[str, str]]] = {}
    for r in p.read(p.topics.dlq.name, raw=True):
        headers = parse_dlq_headers(list(r["headers"].items()))
        try:
            eid = p.codec.decode(r["value"])[1]["event_id"]
        except Exception:  # not a ManifestPulled of ours: keep it visible under its own name
            eid = f"undecodable@{r['partition']}:{r['offset']}"
        dead.setdefault(eid, []).append(headers)
    return Observed(
        image_cached=_by(p.read(p.topics.image_cached.name), "caused_by"),
        layer_cached=_by(p.read(p.topics.layer_cached.name), "caused_by"),
        dead=dead,
        retries=len(p.read(p.topics.retry.name, raw=True)),
    )


def wait_terminal(p: Pipeline, event_ids: Iterable[str], timeout: float, names: Iterable[str] = ()) -> Observed:
    """Waits until every event has an ImageCached or a dead letter; fails naming those that have neither."""
    want = set(event_ids)
    deadline = time.monotonic() + timeout
    while True:
        obs = observe(p)
        missing = want - obs.terminal()
        if not missing:
            return obs
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{p.log(n)}" for n in names or p.procs)
            raise AssertionError(f"{len(missing)} of {len(want)} events have no terminal record: "
                                 f"{sorted(missing)[:5]}...\n{logs}")  # fmt: skip
        time.sleep(2)


def committed_lag(p: Pipeline, topic: str) -> int:
    """Records of `topic` the fetcher group has not committed yet (end offset minus committed offset)."""
    c = Consumer({"bootstrap.servers": p.settings.kafka.bootstrap_servers, "group.id": f"{p.id}-fetcher"})
    try:
        parts = [TopicPartition(topic, i) for i in c.list_topics(topic, timeout=10).topics[topic].partitions]
        lag = 0
        for tp in c.committed(parts, timeout=10):
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            lag += high - max(tp.offset, 0)
        return lag
    finally:
        c.close()


def wait_all_committed(p: Pipeline, timeout: float = 120) -> None:
    """The group committed every input record (the quiet-batch commit may lag by a second)."""
    deadline = time.monotonic() + timeout
    while (lag := committed_lag(p, p.topics.manifest_pulled.name)) > 0:
        assert time.monotonic() < deadline, f"{lag} records of the input topic never committed"
        time.sleep(1)


def check_outputs(sent: list[Sent], obs: Observed, *, allow_dead: bool = False) -> list[str]:
    """Exactly one terminal record per event, outputs exactly once; returns the problems found."""
    problems = []
    counts = Counter(s.event_id for s in sent)
    assert max(counts.values()) == 1, "event ids must be unique per drill"
    for s in sent:
        ic = obs.image_cached.get(s.event_id, [])
        lc = obs.layer_cached.get(s.event_id, [])
        dead = obs.dead.get(s.event_id, [])
        where = f"{s.image.repository} (event {s.event_id})"
        if dead and not allow_dead:
            problems.append(f"{where}: dead-lettered: {dead[0].get('error.class')}: {dead[0].get('error.message')}")
        if len(ic) + len(dead) != 1:
            problems.append(f"{where}: {len(ic)} ImageCached and {len(dead)} dead letters, expected one in all")
        if ic:
            if ic[0]["digest"] != s.image.digest:
                problems.append(f"{where}: ImageCached names {ic[0]['digest']}, expected {s.image.digest}")
            blobs = sorted(r["digest"] for r in lc)
            if blobs != sorted([s.image.config_digest, s.image.layer_digest]):
                problems.append(f"{where}: LayerCached for {blobs}, expected the config and the layer once each")
        elif lc:
            problems.append(f"{where}: {len(lc)} LayerCached without an ImageCached")
    stray = set(obs.image_cached) - set(counts)
    if stray:
        problems.append(f"ImageCached for events never published: {sorted(stray)}")
    return problems


def check_storage(images: Iterable[PushedImage], storage: CacheStorage, *, complete: bool = True) -> list[str]:
    """Nothing wrong or partial at any final key, no upload left open; when complete, all there and linked."""
    problems = []
    for im in images:
        blobs = {im.config_digest: None, im.layer_digest: im.layer_size}
        for digest, size in blobs.items():
            open_uploads = storage.uploads_in_progress(digest)
            if open_uploads:
                problems.append(f"{im.repository}: {len(open_uploads)} multipart upload(s) left open for {digest}")
            stored = storage.size(digest)
            if stored is None:
                if complete:
                    problems.append(f"{im.repository}: {digest} missing at its final key")
                continue
            got, n = storage.rehash(digest)
            if got != digest or (size is not None and n != size):
                problems.append(f"{im.repository}: {digest} at its final key hashes to {got} ({n} bytes)")
            if complete and storage.layer_link(im.repository, digest) != digest:
                problems.append(f"{im.repository}: no _layers link for {digest}")
        if complete:
            if storage.size(im.digest) is None:
                problems.append(f"{im.repository}: manifest {im.digest} missing")
            if storage.manifest_link(im.repository, im.digest) != im.digest:
                problems.append(f"{im.repository}: no revision link for manifest {im.digest}")
    return problems


def outcome_counts(sent: list[Sent], obs: Observed) -> dict[str, int]:
    out: Counter[str] = Counter()
    for s in sent:
        if s.event_id in obs.image_cached:
            out["complete"] += 1
        for h in obs.dead.get(s.event_id, []):
            out[f"dead-lettered ({h.get('error.class')})"] += 1
        if s.event_id not in obs.terminal():
            out["lost"] += 1
    return dict(out)


def write_results(devstack: DevStack, name: str, data: dict[str, Any]) -> Path:
    """The drill's numbers, for docs/reliability.md: .devstack/faults-results/<name>-<time>.json."""
    directory = devstack.ctx.paths.state / "faults-results"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path
