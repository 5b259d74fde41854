"""Upstream fault drills against the real fetcher: small random images, each with at most one upstream fault
armed on a FaultProxy, the outcome each must reach, and the checks of the end state:

- every published event has exactly one terminal record, read_committed: one ImageCached (plus one LayerCached
  per blob) when the image completed, one dead letter (and no output) when it did not;
- a dead letter names the cause the fault implies, and the faulted object's digest;
- storage holds nothing wrong: any object at a blob's final key hashes to its digest, no upload is left open,
  a completed image is all there and linked, a dead-lettered image's faulted object is absent.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from layerfill.kafka.deadletter import parse_dlq_headers
from layerfill.oci.mediatypes import ACCEPT_MANIFESTS
from layerfill.producers.publisher import Publisher, build_event
from layerfill.remote.transport.retry import RetryPolicy
from tests.support.cachestore import CacheStorage
from tests.support.faultproxy import (
    Action,
    Challenged,
    Corrupt,
    FaultProxy,
    Reset,
    Rule,
    Slow,
    Stall,
    Status,
    Truncate,
)
from tests.support.images import PushedImage, push_random_image
from tests.support.pipeline import Pipeline

KiB = 1024
MiB = 1024 * KiB

TARGETS = ("manifest", "config", "layer")
STATUS_CODES = {"500": 500, "502": 502, "503": 503}
# Faults that end in the dead-letter topic when they never stop. `slow` (within the read timeout) never fails.
PERSISTABLE = ("500", "502", "503", "429", "reset", "truncate", "corrupt", "stall")
KINDS = ("none", "slow", *PERSISTABLE)

# The dead letter a persistent fault must cause: error classes, and a pattern its message must match.
CAUSES: dict[str, tuple[frozenset[str], str]] = {
    **{k: (frozenset({"UpstreamError"}), rf"HTTP {k}\b") for k in STATUS_CODES},
    "429": (frozenset({"RateLimited"}), r"rate limited"),
    "corrupt": (frozenset({"DigestMismatch", "SinkIntegrityError"}), r"digest mismatch"),
    "reset": (frozenset({"BodyInterrupted", "UpstreamError"}), r"connection reset|ended before|ended after"),
    "truncate": (frozenset({"BodyInterrupted"}), r"ended before its announced length|ended after \d+ of"),
    "stall": (frozenset({"BodyInterrupted", "UpstreamError"}), r"timed out"),
    "badcreds": (frozenset({"Unauthorized"}), r"token realm refused the credentials"),
    "tokendown": (frozenset({"UpstreamError"}), r"HTTP 503: token realm"),
}
# Faults of the proxy's token auth rather than of one object: a dead letter names no digest, nothing is fetched.
AUTH_FAULTS = ("badcreds", "tokendown")


@dataclass(frozen=True)
class DrillConfig:
    """The fetcher's retry budget and timeouts in a drill, short so that persistent faults end quickly."""

    attempts_in_process: int = 2
    retry_delays_s: tuple[float, ...] = (1.0,)
    read_timeout_s: float = 2.0
    part_bytes: int = 5 * MiB  # the minimum: layers above it go up as multipart uploads

    def env(self) -> dict[str, str]:
        return {
            "LAYERFILL_FETCHER__ATTEMPTS_IN_PROCESS": str(self.attempts_in_process),
            "LAYERFILL_FETCHER__RETRY_DELAYS_S": json.dumps(list(self.retry_delays_s)),
            "LAYERFILL_FETCHER__UPSTREAM_READ_TIMEOUT_S": str(self.read_timeout_s),
            "LAYERFILL_FETCHER__PART_BYTES": str(self.part_bytes),
        }

    @property
    def fill_attempts(self) -> int:
        return self.attempts_in_process * (1 + len(self.retry_delays_s))

    def transient_budget(self, kind: str) -> int:
        """The most faulted requests an image can get and still complete. A fill attempt absorbs one wrong
        body (the digest is checked at its end), but a whole retry sequence of error answers (client retries)
        or broken bodies (each read of the blob stream, or of the manifest, is one attempt)."""
        if kind == "corrupt":
            return self.fill_attempts - 1
        return RetryPolicy().max_attempts * self.fill_attempts - 1


@dataclass(frozen=True)
class Fault:
    kind: str  # one of KINDS; or "auth" (the token dance), "badcreds", "tokendown" (token endpoint 503 forever)
    target: str = "layer"  # manifest | config | layer
    times: int | None = None  # faulted requests; None = all of them, forever

    @property
    def persistent(self) -> bool:
        return self.times is None and self.kind in (*PERSISTABLE, *AUTH_FAULTS)

    def action(self, size: int, cfg: DrillConfig) -> Action | None:
        """The proxy action for an object of `size` bytes. Cut-offs are small enough that even the stream's
        Range resumes cannot add up to the whole object within one fill attempt."""
        cut = max(1, size // (RetryPolicy().max_attempts + 1))
        if self.kind in STATUS_CODES:
            return Status(STATUS_CODES[self.kind])
        return {
            "429": Status(429, retry_after="1"),
            "reset": Reset(after=cut),
            "truncate": Truncate(after=cut),
            "corrupt": Corrupt(at=size // 2, count=4),
            "slow": Slow(bytes_per_s=max(64 * KiB, size), chunk=max(256, size // 32)),  # ~1 s, in 32 writes
            "stall": Stall(after=cut, seconds=cfg.read_timeout_s + 3),
        }.get(self.kind)

    def __str__(self) -> str:
        times = "always" if self.times is None else f"x{self.times}"
        return f"{self.kind}@{self.target}({times})"


@dataclass
class DrillImage:
    case: str
    fault: Fault
    image: PushedImage
    manifest_size: int
    config_size: int
    proxy: FaultProxy
    rule: Rule | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def repository(self) -> str:
        return self.image.repository

    def digest(self, target: str) -> str:
        return {"manifest": self.image.digest, "config": self.image.config_digest, "layer": self.image.layer_digest}[
            target
        ]

    def size(self, target: str) -> int:
        return {"manifest": self.manifest_size, "config": self.config_size, "layer": self.image.layer_size}[target]

    def arm(self, cfg: DrillConfig) -> None:
        action = self.fault.action(self.size(self.fault.target), cfg)
        if action is not None:
            self.rule = self.proxy.add(action, digest=self.digest(self.fault.target), method="GET",
                                       times=self.fault.times)  # fmt: skip

    @property
    def expected(self) -> str:
        return "dead_lettered" if self.fault.persistent else "complete"

    def injected(self) -> int:
        """Faulted answers the proxy gave this image: its rule's hits, or its 401s when token auth is the fault."""
        if self.rule is not None:
            return self.rule.hits
        return self.token_401s() if self.fault.kind in ("auth", *AUTH_FAULTS) else 0

    def token_401s(self) -> int:
        """Requests for this image's repository answered 401 by the proxy's token auth."""
        return sum(isinstance(r.action, Challenged) for r in self.proxy.requests(f"/v2/{self.repository}/"))


def push_drill_image(upstream: str, repository: str, workdir: Path, layer_size: int) -> tuple[PushedImage, int, int]:
    """A random image on the upstream, with its manifest's and config's sizes (read back from the upstream)."""
    image = push_random_image(upstream, repository, workdir, layer_size)
    got = requests.get(f"http://{upstream}/v2/{repository}/manifests/{image.digest}",
                       headers={"Accept": ACCEPT_MANIFESTS}, timeout=30)  # fmt: skip
    got.raise_for_status()
    return image, len(got.content), int(got.json()["config"]["size"])


def publish_all(p: Pipeline, registry: str, images: list[DrillImage]) -> None:
    pub = Publisher(p.settings)
    try:
        pub.publish([build_event(registry=registry, repository=d.repository, digest=d.image.digest, reference="1",
                                 event_id=d.event_id) for d in images])  # fmt: skip
    finally:
        pub.close()


@dataclass
class Observed:
    """Every committed record of the pipeline's output topics, by the event that caused it."""

    image_cached: Counter[str] = field(default_factory=Counter)
    layer_cached: dict[str, Counter[str]] = field(default_factory=dict)
    dead: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)

    def terminal(self) -> set[str]:
        return set(self.image_cached) | set(self.dead)


def observe(p: Pipeline, *, outputs: bool = True) -> Observed:
    obs = Observed()
    for r in p.read(p.topics.dlq.name, raw=True):
        _, ev = p.codec.decode(r["value"])
        obs.dead.setdefault(ev["event_id"], []).append(parse_dlq_headers(list(r["headers"].items())))
    for r in p.read(p.topics.image_cached.name):
        obs.image_cached[r["caused_by"]] += 1
    if outputs:
        for r in p.read(p.topics.layer_cached.name):
            obs.layer_cached.setdefault(r["caused_by"], Counter())[r["digest"]] += 1
        for r in p.read(p.topics.retry.name, raw=True):
            obs.retries[p.codec.decode(r["value"])[1]["event_id"]] += 1
    return obs


def wait_terminal(p: Pipeline, images: list[DrillImage], timeout: float, context: str) -> None:
    """Until every image's event has a terminal record (ImageCached or a dead letter)."""
    wanted = {d.event_id for d in images}
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - observe(p, outputs=False).terminal()
        if not missing:
            return
        if time.monotonic() > deadline:
            late = [f"{d.case} {d.fault} {d.repository}" for d in images if d.event_id in missing]
            raise AssertionError(
                f"{context}: {len(missing)} events without a terminal record after {timeout}s: {late}\n"
                + "\n".join(f"--- {n}\n{p.log(n)}" for n in p.procs)
            )
        time.sleep(2)


def check_image(d: DrillImage, obs: Observed, storage: CacheStorage, cfg: DrillConfig) -> list[str]:
    """What is wrong with this image's end state (empty: nothing)."""
    problems: list[str] = []
    where = f"{d.case} {d.fault} {d.repository}"
    dead = obs.dead.get(d.event_id, [])
    cached = obs.image_cached[d.event_id]
    layers = obs.layer_cached.get(d.event_id, Counter())
    outcome = "complete" if cached else "dead_lettered" if dead else "lost"
    if outcome != d.expected:
        why = f" ({dead[0].get('error.class')}: {dead[0].get('error.message')})" if dead else ""
        problems.append(f"{where}: {outcome}, expected {d.expected}{why}")
    # Exactly once: one terminal record, and the outputs exactly once for a completed image.
    if cached + len(dead) != 1:
        problems.append(f"{where}: {cached} ImageCached and {len(dead)} dead letters, expected exactly one in all")
    want_layers = Counter({d.image.config_digest: 1, d.image.layer_digest: 1}) if cached else Counter()
    if layers != want_layers:
        problems.append(f"{where}: LayerCached {dict(layers)}, expected {dict(want_layers)}")
    if obs.retries[d.event_id] > len(cfg.retry_delays_s):
        problems.append(f"{where}: {obs.retries[d.event_id]} retry-topic records, at most {len(cfg.retry_delays_s)}")
    if dead and d.fault.persistent:
        classes, pattern = CAUSES[d.fault.kind]
        h = dead[0]
        if h.get("error.class") not in classes or not re.search(pattern, h.get("error.message", "")):
            problems.append(f"{where}: dead-lettered with {h.get('error.class')}: {h.get('error.message')!r}, "
                            f"expected {sorted(classes)} matching {pattern!r}")  # fmt: skip
        elif d.fault.kind not in AUTH_FAULTS and d.digest(d.fault.target) not in h.get("error.message", ""):
            problems.append(f"{where}: the dead letter does not name the faulted {d.fault.target}: {h!r}")
        if d.fault.kind == "badcreds" and (obs.retries[d.event_id] or h.get("attempts") != "1"):
            problems.append(f"{where}: a permanent failure was retried: {h!r}")
    problems.extend(check_storage(d, storage, complete=outcome == "complete"))
    return problems


def check_storage(d: DrillImage, storage: CacheStorage, *, complete: bool) -> list[str]:
    problems: list[str] = []
    where = f"{d.case} {d.fault} {d.repository}"
    for target in TARGETS:
        digest, size = d.digest(target), d.size(target)
        if storage.uploads_in_progress(digest):
            problems.append(f"{where}: an upload of the {target} {digest} was left open")
        if storage.size(digest) is not None and storage.rehash(digest) != (digest, size):
            problems.append(f"{where}: wrong bytes stored for the {target} {digest}: {storage.rehash(digest)}")
        if complete and storage.size(digest) is None:
            problems.append(f"{where}: complete but the {target} {digest} is not stored")
    links = {
        "manifest": storage.manifest_link(d.repository, d.image.digest),
        "config": storage.layer_link(d.repository, d.image.config_digest),
        "layer": storage.layer_link(d.repository, d.image.layer_digest),
    }
    for target, link in links.items():
        if link is not None and link != d.digest(target):
            problems.append(f"{where}: the {target} link points at {link}")
        if complete and link is None:
            problems.append(f"{where}: complete but the {target} is not linked")
    if not complete and d.fault.kind in AUTH_FAULTS:
        if any(storage.size(d.digest(t)) is not None or links[t] is not None for t in TARGETS):
            problems.append(f"{where}: refused by the upstream's auth, yet some of it is in storage")
    elif not complete and d.fault.persistent:
        faulted = d.digest(d.fault.target)
        if storage.size(faulted) is not None or links[d.fault.target] is not None:
            problems.append(f"{where}: dead-lettered, yet its faulted {d.fault.target} {faulted} is in storage")
    return problems


def outcome_of(d: DrillImage, obs: Observed) -> dict[str, Any]:
    dead = obs.dead.get(d.event_id, [])
    return {
        "case": d.case,
        "fault": d.fault.kind,
        "target": d.fault.target,
        "times": d.fault.times,
        "persistent": d.fault.persistent,
        "layer_bytes": d.image.layer_size,
        "injected": d.injected(),
        "token_401s": d.token_401s(),
        "retry_topic_records": obs.retries[d.event_id],
        "outcome": "complete" if obs.image_cached[d.event_id] else "dead_lettered" if dead else "lost",
        "dead_letter_class": dead[0].get("error.class") if dead else None,
    }


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows grouped by (fault, persistent): images, faults injected, outcomes."""
    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault((r["fault"], r["persistent"]), {"fault": r["fault"], "persistent": r["persistent"],
                                                               "images": 0, "injected": 0, "token_401s": 0,
                                                               "outcomes": Counter()})  # fmt: skip
        g["images"] += 1
        g["injected"] += r["injected"]
        g["token_401s"] += r["token_401s"]
        label = r["outcome"] + (f" ({r['dead_letter_class']})" if r["dead_letter_class"] else "")
        g["outcomes"][label] += 1
    return [{**g, "outcomes": dict(g["outcomes"])} for _, g in sorted(groups.items())]


def write_results(directory: Path, name: str, data: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def random_fault(rng: random.Random, cfg: DrillConfig, *, persistent_share: float, stall_persistent: bool) -> Fault:
    """A fault for one image of a mixed run; transient ones stay within the budget that still completes."""
    kind = rng.choice(KINDS)
    target = rng.choice(TARGETS)
    if kind in ("none", "slow"):
        return Fault(kind, target, None)
    may_persist = kind != "stall" or stall_persistent
    if may_persist and rng.random() < persistent_share:
        return Fault(kind, target, None)
    # Half the budget (at least one attempt to spare for corrupt) so that a hiccup of the stack cannot tip a
    # transient fault into a dead letter; 429 (Retry-After: 1) and stall cost seconds per faulted request.
    budget = cfg.transient_budget(kind)
    cap = {"429": 3, "stall": 2, "corrupt": budget - 1}.get(kind, budget // 2)
    return Fault(kind, target, rng.randint(1, max(1, cap)))
