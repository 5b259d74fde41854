"""Shared plumbing for the benchmarks: the devstack, the e2e lock, fetcher metrics, peak RSS, bulk producing,
and the JSON results. Benchmarks measure and print; they never assert on timings."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import pstats
import random
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from layerfill.kafka.keys import DIGEST_HEADER
from layerfill.producers.publisher import manifest_pulled_record
from layerfill.serde import events
from layerfill.serde.codec import EventCodec
from layerfill.serde.records import ManifestPulled

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Raw samples kept in the repository (every sample, not only percentiles), which `python -m bench.plots` draws.
DOC_DATA = ROOT / "docs" / "bench-data"
PLOTTED = ("latency", "scaleout", "egress")
# Shared with the e2e tests: one bridge port, and some tests stop the upstream.
E2E_LOCK = Path("/tmp/layerfill-e2e.lock")
WORK = Path(os.environ.get("LAYERFILL_BENCH_DIR", "/tmp/layerfill-bench"))


@contextlib.contextmanager
def e2e_lock() -> Iterator[None]:
    """Hold the e2e lock for the whole benchmark, unless the caller already runs under `flock` (BENCH_LOCKED=1)."""
    if os.environ.get("BENCH_LOCKED") == "1":
        yield
        return
    E2E_LOCK.touch(exist_ok=True)
    with E2E_LOCK.open("r") as fh:
        print(f"waiting for {E2E_LOCK} ...", flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def workdir(name: str) -> Path:
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def machine() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    load1, load5, _ = os.getloadavg()
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(vm.total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg_1m_at_start": round(load1, 2),
        "loadavg_5m_at_start": round(load5, 2),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **data}
    path = RESULTS / f"{name}.json"
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")
    if name in PLOTTED:
        DOC_DATA.mkdir(parents=True, exist_ok=True)
        (DOC_DATA / f"{name}.json").write_text(text)
        print(f"wrote {(DOC_DATA / name).relative_to(ROOT)}.json (python -m bench.plots redraws docs/img/bench-*.png)")
    return path


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- the fetcher's Prometheus metrics -------------------------------------------------------------------------
_EVENTS = re.compile(r'^layerfill_fetcher_events_total\{outcome="([^"]+)"\}\s+([0-9.eE+]+)$', re.M)


def fetcher_events(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {outcome: float(v) for outcome, v in _EVENTS.findall(text)}


_BATCHES = re.compile(r"^layerfill_fetcher_batch_seconds_count\s+([0-9.eE+]+)$", re.M)


def fetcher_batches(port: int) -> int:
    """How many batches the fetcher has processed (its batch-time histogram's count)."""
    found = _BATCHES.search(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    return int(float(found.group(1))) if found else 0


def wait_events(port: int, total: int, timeout: float, interval: float = 0.1) -> list[tuple[float, float]]:
    """Poll the events counter until it reaches `total`; returns the (monotonic time, count) samples."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(fetcher_events(port).values())
        samples.append((time.monotonic(), n))
        if n >= total:
            return samples
        time.sleep(interval)
    raise TimeoutError(f"fetcher counted {samples[-1][1] if samples else 0} of {total} events in {timeout}s")


def steady_rate(samples: list[tuple[float, float]], start: float, end: float) -> tuple[float, float]:
    """Events/s between the first sample above `start` events and the first at or above `end`: excludes the
    group join and the first (database) lookups. Returns (rate, seconds)."""
    t0 = next((t, n) for t, n in samples if n > start)
    t1 = next((t, n) for t, n in samples if n >= end)
    secs = t1[0] - t0[0]
    return ((t1[1] - t0[1]) / secs if secs > 0 else float("nan")), secs


# -- peak RSS -------------------------------------------------------------------------------------------------
class PeakRss:
    """Samples a process's RSS in a thread; `peak` in bytes."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def devstack_codec() -> EventCodec:
    """The codec the pipeline's processes use: the devstack env turns the schema registry (Confluent framing) on."""
    from layerfill.config import load_settings
    from layerfill.wiring import make_codec

    return make_codec(load_settings())


# -- bulk producing -------------------------------------------------------------------------------------------
def produce_pulls(bootstrap: str, topic: str, images: list[tuple[str, str, str]], count: int,
                  codec: EventCodec | None = None, *, digest_header: bool = True) -> float:  # fmt: skip
    """`count` ManifestPulled events cycling over (registry, repository, digest), with a plain idempotent
    producer (no per-event acknowledgement wait), each record as the product's producers write it
    (layerfill.producers.publisher), or without the digest header (`digest_header=False`: an older producer's
    record, which the fetcher must decode). Returns seconds taken."""
    codec = codec or devstack_codec()
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                  "batch.num.messages": 10000, "compression.type": "zstd"})  # fmt: skip
    start = time.monotonic()
    now = events.utc_now()
    for i, value in enumerate(_pull_values(images, count, now)):
        rec = manifest_pulled_record(codec, topic, ManifestPulled.from_avro(value))
        headers = [h for h in rec.headers if digest_header or h[0] != DIGEST_HEADER]
        while True:
            try:
                p.produce(topic, value=rec.value, key=rec.key, headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} events not delivered")
    return time.monotonic() - start


def _pull_values(images: list[tuple[str, str, str]], count: int, when: datetime) -> Iterable[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    for i in range(count):
        reg, repo, digest = images[i % len(images)]
        yield events.manifest_pulled(event_id=f"bench-{run}-{i}", source="library", registry=reg,
                                     repository=repo, digest=digest, occurred_at=when)  # fmt: skip


# Benchmarks that publish events with no client pulling measure the fetch pipeline, not the wait for a client's
# pull (docs/upstream-cost.md): their routes fetch missing blobs at once. bench/egress.py measures the wait.
NO_DEFER = {"upstream_cost": {"defer_layers": False}}


def route(devstack: Any, prefix: str, upstream_url: str | None = None, **extra: Any) -> dict[str, Any]:
    """A distribution-sink route for `prefix` on the proxy registry (repository names kept as they are)."""
    return {
        "registry": devstack.proxy_registry,
        "repository_prefix": prefix,
        "strip_prefix": False,
        "upstream_url": upstream_url or f"http://{devstack.upstream_registry}",
        "sink": "distribution",
        "proxy_url": f"http://{devstack.proxy_registry}",
        **extra,
    }


def start_fetcher(p: Any, name: str = "fetcher", profile: Path | None = None,
                  env: dict[str, str] | None = None) -> subprocess.Popen:  # fmt: skip
    """`p.start("fetcher")`, or the same process under cProfile writing `profile` when it stops (SIGTERM)."""
    if profile is None:
        return p.start("fetcher", name=name, env=env)
    log = open(p.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "layerfill.cli.main", "run", "fetcher"]
    proc = subprocess.Popen(argv, env={**p.env(name), **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    p.procs[name] = proc
    p._wait_http(f"http://127.0.0.1:{p.health_ports[name]}/readyz", proc, name)
    return proc


def print_profile(path: Path, top: int = 30) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


# -- percentiles ----------------------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100): a value that was measured, never an interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary_ms(values: list[float]) -> dict[str, float | int | None]:
    """p50/p99/min/max of seconds, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {"n": len(values), "p50_ms": ms(percentile(values, 50)), "p99_ms": ms(percentile(values, 99)),
            "min_ms": ms(min(values, default=None)), "max_ms": ms(max(values, default=None))}  # fmt: skip


# -- images pushed over the registry API (no skopeo process per image) ---------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_tar_layer(size: int, seed: int) -> bytes:
    """An uncompressed tar with one file of `size` seeded random bytes: a valid layer, built in well under a
    second for tens of MiB (gzip of random data would cost more than it is worth here)."""
    data = random.Random(seed).randbytes(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class PushedImage:
    repository: str
    tag: str
    digest: str  # the manifest's
    config: str
    layers: tuple[tuple[str, int], ...]  # (digest, size)

    @property
    def blobs(self) -> list[str]:
        return [self.config, *(d for d, _ in self.layers)]


class ApiPusher:
    """Pushes blobs and single-platform OCI images with the distribution API: monolithic uploads, and
    cross-repository mounts for blobs already in the registry."""

    def __init__(self, registry: str) -> None:
        self.base = f"http://{registry}"
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def blob(self, repository: str, data: bytes) -> str:
        digest = sha256_digest(data)
        r = self.session.post(f"{self.base}/v2/{repository}/blobs/uploads/", timeout=60)
        r.raise_for_status()
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"{self.base}{loc}"
        sep = "&" if "?" in loc else "?"
        r = self.session.put(f"{loc}{sep}digest={digest}", data=data, timeout=300,
                             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        r.raise_for_status()
        return digest

    def mount(self, repository: str, digest: str, source: str) -> None:
        r = self.session.post(f"{self.base}/v2/{repository}/blobs/uploads/",
                              params={"mount": digest, "from": source}, timeout=60)  # fmt: skip
        if r.status_code != 201:
            raise RuntimeError(f"mount of {digest} from {source} into {repository}: HTTP {r.status_code}")

    def image(self, repository: str, tag: str, layers: list[tuple[str, int]], note: str) -> PushedImage:
        """A manifest over layers already pushed (or mounted) into `repository`; `note` makes its config, and so
        its digest, unique. Layers are uncompressed tars, so their diff_ids are their digests."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"bench": note}},
                             "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layers]}},
                            sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        config_digest = self.blob(repository, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_TAR, "digest": d, "size": s} for d, s in layers],
        }, sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        r = self.session.put(f"{self.base}/v2/{repository}/manifests/{tag}", data=manifest, timeout=60,
                             headers={"Content-Type": OCI_MANIFEST})  # fmt: skip
        r.raise_for_status()
        return PushedImage(repository, tag, sha256_digest(manifest), config_digest, tuple(layers))


# -- watching output topics -----------------------------------------------------------------------------------
@dataclass
class Seen:
    """One record read by a TopicWatch: when this process read it and its Kafka (producer) timestamp."""

    topic: str
    partition: int
    t_seen: float  # time.time() at consume
    t_record: float  # the record's CreateTime, seconds
    value: dict[str, Any]


class TopicWatch:
    """Reads topics from their start in a thread (read_committed, one record per poll, so the consume time of
    each record is accurate to the poll) and keeps the records whose repository starts with `prefix`."""

    def __init__(self, bootstrap: str, topics: list[str], prefix: str, codec: EventCodec | None = None) -> None:
        self.codec = codec or devstack_codec()
        self.prefix = prefix
        self.topics = topics
        self.records: list[Seen] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        # fetch.wait.max.ms: the broker answers a fetch as soon as there is data; a short wait bounds the
        # delay after a transaction commit makes data visible to read_committed.
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                                   "isolation.level": "read_committed", "enable.auto.commit": False,
                                   "fetch.wait.max.ms": 10})  # fmt: skip
        parts = []
        for topic in topics:
            md = self._consumer.list_topics(topic, timeout=10).topics[topic]
            parts += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions]
        self._consumer.assign(parts)
        self._thread = threading.Thread(target=self._run, name="topic-watch", daemon=True)

    def __enter__(self) -> TopicWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._consumer.poll(0.05)
            if m is None or m.error():
                continue
            t = time.time()
            _, value = self.codec.decode(m.value())
            if not str(value.get("repository", "")).startswith(self.prefix):
                continue
            with self._cond:
                self.records.append(Seen(m.topic(), m.partition(), t, m.timestamp()[1] / 1000, value))
                self._cond.notify_all()

    def find(self, topic: str, repository: str | None = None) -> list[Seen]:
        with self._cond:
            return [s for s in self.records if s.topic == topic and (repository is None
                                                                       or s.value["repository"] == repository)]  # fmt: skip

    def wait(self, topic: str, repository: str | None, timeout: float, count: int = 1) -> list[Seen]:
        """The first `count` records of `repository` (any, when None) on `topic`; [] when they do not come."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self.records if s.topic == topic
                         and (repository is None or s.value["repository"] == repository)]  # fmt: skip
                left = deadline - time.monotonic()
                if len(found) >= count or left <= 0:
                    return found
                self._cond.wait(left)


# -- consumer groups -------------------------------------------------------------------------------------------
def wait_group(bootstrap: str, group: str, members: int, partitions: int, timeout: float = 120) -> dict[str, int]:
    """Until `group` is stable with `members` members that hold `partitions` partitions between them; returns
    partitions per member (member id)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
        last = {m.member_id: len(m.assignment.topic_partitions) for m in desc.members}
        if (
            desc.state == ConsumerGroupState.STABLE
            and len(desc.members) == members
            and sum(last.values()) >= partitions
        ):
            return last
        time.sleep(0.2)
    raise TimeoutError(f"group {group} not stable with {members} members in {timeout}s: {last}")
