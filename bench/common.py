"""Shared plumbing for the benchmarks: the devstack, the e2e lock, fetcher metrics, peak RSS, bulk producing,
and the JSON results. Benchmarks measure and print; they never assert on timings."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import pstats
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests
from confluent_kafka import Producer

from layerfill.kafka.keys import repository_key
from layerfill.serde import events
from layerfill.serde.codec import EventCodec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
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
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- the fetcher's Prometheus metrics -------------------------------------------------------------------------
_EVENTS = re.compile(r'^layerfill_fetcher_events_total\{outcome="([^"]+)"\}\s+([0-9.eE+]+)$', re.M)


def fetcher_events(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {outcome: float(v) for outcome, v in _EVENTS.findall(text)}


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


# -- bulk producing -------------------------------------------------------------------------------------------
def produce_pulls(bootstrap: str, topic: str, images: list[tuple[str, str, str]], count: int,
                  codec: EventCodec | None = None) -> float:  # fmt: skip
    """`count` ManifestPulled events cycling over (registry, repository, digest), with a plain idempotent
    producer (no per-event acknowledgement wait). Returns seconds taken."""
    codec = codec or EventCodec()
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20,
                  "batch.num.messages": 10000, "compression.type": "zstd"})  # fmt: skip
    start = time.monotonic()
    now = events.utc_now()
    for i, value in enumerate(_pull_values(images, count, now)):
        reg, repo = value["registry"], value["repository"]
        data = codec.encode("ManifestPulled", value, topic)
        while True:
            try:
                p.produce(topic, value=data, key=repository_key(reg, repo))
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
