"""Benchmark 4, scale-out: 1, 2 and 4 fetcher processes in one consumer group on an 8-partition topic, with the
upstream capped per connection (bench/relay.py, default 1 MiB/s) so the work is I/O-bound, not CPU-bound on a
2-core machine. Throughput (images/s, bytes/s) and its ratio to one process, all rounds in one run.

Each round gets its own images (default 128, one 2 MiB layer each, each in its own repository, none in the
cache), its own topics and consumer group. Repository names are chosen so that their keys spread evenly over
the 8 partitions (8 x 16), so a round measures the fetchers, not how a hash happened to fall. The processes are
started, the group is waited for until it is stable with every partition assigned, then all the round's
ManifestPulled events are produced at once; throughput runs from the produce to the last ImageCached read
(read_committed) by this process.

    .venv/bin/python -m bench.scaleout [--procs 1,2,4 --images 128 --layer-mib 2 --rate-kib 1024]
"""

from __future__ import annotations

import argparse
import contextlib
import time
import zlib
from typing import Any

import psutil
from minio import Minio

from bench import common
from bench.fill_throughput import clean_s3, clean_upstream
from bench.relay import Relay
from layerfill.kafka.keys import repository_key
from layerfill.sinks.layout import blob_data_key, repository_prefix
from layerfill.sinks.s3client import make_http_pool, make_minio
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, ensure_up

PARTITIONS = 8


def balanced_repositories(registry: str, prefix: str, count: int, partitions: int) -> list[str]:
    """`count` repository names whose keys fall evenly on `partitions` partitions under librdkafka's default
    partitioner (consistent_random: CRC-32 of the key modulo the partition count)."""
    per = -(-count // partitions)
    taken: dict[int, int] = {}
    names: list[str] = []
    j = 0
    while len(names) < count:
        name = f"{prefix}-{j:05d}"
        j += 1
        part = zlib.crc32(repository_key(registry, name)) % partitions
        if taken.get(part, 0) < per:
            taken[part] = taken.get(part, 0) + 1
            names.append(name)
    return names


def push_round(pusher: common.ApiPusher, registry: str, prefix: str, images: int, layer_bytes: int,
               seed: int) -> list[common.PushedImage]:  # fmt: skip
    out = []
    for i, repo in enumerate(balanced_repositories(registry, prefix, images, PARTITIONS)):
        layer = common.random_tar_layer(layer_bytes, seed + i)
        digest = pusher.blob(repo, layer)
        out.append(pusher.image(repo, "1", [(digest, len(layer))], note=repo))
    return out


def steady_rate(completed: list[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Images/s between the `lo` and `hi` quantiles of the fill completion times: the rate once every process is
    busy and before the first runs out of work. A round's whole-run rate also carries a ramp and a tail of
    about one fill each (~4 s here), which weigh 3% in one process's 141 s and 10% in four processes' 40 s."""
    times = sorted(completed)
    first, last = int(len(times) * lo), int(len(times) * hi) - 1
    if last <= first or times[last] <= times[first]:
        raise ValueError(f"too few completions for a steady rate: {len(times)}")
    return (last - first) / (times[last] - times[first])


def run_round(devstack: DevStack, wd_name: str, prefix: str, relay: Relay, procs: int,
              images: list[common.PushedImage], state: str) -> dict[str, Any]:  # fmt: skip
    wd = common.workdir(wd_name)
    p = Pipeline(
        devstack,
        wd,
        partitions=PARTITIONS,
        routes=[common.route(devstack, prefix, upstream_url=relay.url, **common.NO_DEFER)],
        state=state,
    )
    try:
        names = [f"fetcher-{k}" for k in range(procs)]
        started = [p.start("fetcher", name=n) for n in names]
        bootstrap = p.settings.kafka.bootstrap_servers
        # Both input topics (manifest-pulled and its retry topic) have PARTITIONS partitions.
        assignment = common.wait_group(bootstrap, f"{p.id}-fetcher", procs, 2 * PARTITIONS)
        cpu0 = [sum(psutil.Process(s.pid).cpu_times()[:2]) for s in started]
        with common.TopicWatch(bootstrap, [p.topics.image_cached.name], prefix) as watch:
            pulls = [(devstack.proxy_registry, img.repository, img.digest) for img in images]
            t0 = time.time()
            common.produce_pulls(bootstrap, p.topics.manifest_pulled.name, pulls, len(pulls))
            seen = watch.wait(p.topics.image_cached.name, None, timeout=900, count=len(images))
        if len(seen) < len(images):
            raise TimeoutError(f"{len(seen)} of {len(images)} images cached with {procs} fetchers")
        cpu = [round(sum(psutil.Process(s.pid).cpu_times()[:2]) - c, 2) for s, c in zip(started, cpu0, strict=True)]
        done = [common.fetcher_events(p.health_ports[n]).get("complete", 0) for n in names]
        batches = [common.fetcher_batches(p.health_ports[n]) for n in names]
    finally:
        p.close()
        common.remove(wd)
    end = max(s.t_seen for s in seen)
    fetched = sum(s.value["fetched_bytes"] for s in seen)
    fill_window = max(s.value["completed_at"].timestamp() for s in seen) - min(
        s.value["started_at"].timestamp() for s in seen
    )
    secs = end - t0
    partitions = {}
    for s in seen:
        partitions[s.partition] = partitions.get(s.partition, 0) + 1
    return {
        "processes": procs,
        "images": len(seen),
        "steady_images_per_s": round(steady_rate([s.value["completed_at"].timestamp() for s in seen]), 2),
        "fetched_bytes": fetched,
        "seconds": round(secs, 2),
        "images_per_s": round(len(seen) / secs, 2),
        "bytes_per_s": round(fetched / secs),
        "fill_window_seconds": round(fill_window, 2),
        "images_per_process": done,
        "batches_per_process": batches,
        "cpu_seconds_per_process": cpu,
        "image_cached_per_partition": dict(sorted(partitions.items())),
        "partitions_per_member": assignment,
        # Per image, seconds after the produce: its fill started, completed, and its ImageCached was read.
        "timeline": sorted(_timeline(s, t0) for s in seen),
    }


def _timeline(s: Any, t0: float) -> tuple[float, float, float]:
    v = s.value
    return (
        round(v["started_at"].timestamp() - t0, 2),
        round(v["completed_at"].timestamp() - t0, 2),
        round(s.t_seen - t0, 2),
    )


def run(devstack: DevStack, procs: list[int], images: int, layer_mib: int, rate: int,
        state: str = "postgres") -> dict[str, Any]:  # fmt: skip
    prefix = common.run_id("benchso")
    settings = devstack.settings()
    s3: Minio = make_minio(settings.s3, make_http_pool(max_connections=8))
    bucket, root = settings.s3.bucket, settings.s3.root_directory
    pushed: list[list[common.PushedImage]] = []
    rounds: list[dict[str, Any]] = []
    try:
        t = time.monotonic()
        pusher = common.ApiPusher(devstack.upstream_registry)
        try:
            for r in range(len(procs)):
                pushed.append(push_round(pusher, devstack.proxy_registry, f"{prefix}/r{r}", images,
                                         layer_mib * 2**20, seed=int(prefix[-8:], 16) + 100_000 * r))  # fmt: skip
        finally:
            pusher.close()
        print(f"pushed {len(procs)} x {images} images of {layer_mib} MiB in {time.monotonic() - t:.0f}s")
        with Relay(f"http://{devstack.upstream_registry}", bytes_per_s=rate) as relay:
            for r, n in enumerate(procs):
                host = psutil.Process()
                relay_cpu0 = sum(host.cpu_times()[:2])
                res = run_round(devstack, f"{prefix}-r{r}", prefix, relay, n, pushed[r], state)
                res["bench_process_cpu_seconds"] = round(sum(host.cpu_times()[:2]) - relay_cpu0, 2)
                rounds.append(res)
                print(f"{n} fetcher(s): {res['images_per_s']:.1f} images/s, {res['bytes_per_s'] / 2**20:.1f} MiB/s "
                      f"over {res['seconds']:.1f}s; per process {res['images_per_process']} in {res['batches_per_process']} batches, "
                      f"CPU s {res['cpu_seconds_per_process']}")  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            digests = {d for imgs in pushed for img in imgs for d in img.blobs}
            removed = clean_s3(s3, bucket, [repository_prefix(root, prefix)]
                               + [blob_data_key(root, d).rsplit("/", 1)[0] + "/" for d in digests])  # fmt: skip
            print(f"removed {removed} objects from the cache bucket")
            clean_upstream(devstack, prefix, sorted(digests))
    base = [r for r in rounds if r["processes"] == 1]
    base_ips = sum(r["images_per_s"] for r in base) / len(base) if base else 0
    base_bps = sum(r["bytes_per_s"] for r in base) / len(base) if base else 0
    base_steady = sum(r["steady_images_per_s"] for r in base) / len(base) if base else 0
    concurrency = settings.fetcher.workers
    for r in rounds:
        r["ratio_images_per_s_to_1"] = common.ratio(r["images_per_s"], base_ips)
        r["ratio_bytes_per_s_to_1"] = common.ratio(r["bytes_per_s"], base_bps)
        r["ratio_steady_to_1"] = common.ratio(r["steady_images_per_s"], base_steady)
        # The I/O ceiling: every process keeps `workers` transfers going, each capped at `rate`.
        r["ceiling_bytes_per_s"] = r["processes"] * concurrency * rate
        r["fraction_of_ceiling"] = common.ratio(r["bytes_per_s"], r["ceiling_bytes_per_s"])
    return {
        "partitions": PARTITIONS,
        "images_per_round": images,
        "layer_mib": layer_mib,
        "rate_per_connection_bytes_per_s": rate,
        "fetcher_workers": concurrency,
        "state": state,
        "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", default="1,2,4", help="fetcher processes per round, in order")
    ap.add_argument("--images", type=int, default=128, help="images per round")
    ap.add_argument("--layer-mib", type=int, default=2)
    ap.add_argument("--rate-kib", type=int, default=1024, help="download cap per upstream connection, KiB/s")
    ap.add_argument("--name", default="scaleout", help="results file name under bench/results/")
    # Processes that scale out share a state DB server; SQLite's one file takes one writer at a time.
    ap.add_argument("--state", choices=["postgres", "sqlite"], default="postgres", help="the fetchers' state DB")
    args = ap.parse_args()
    procs = [int(x) for x in args.procs.split(",")]
    with common.e2e_lock():
        result = run(ensure_up(), procs, args.images, args.layer_mib, args.rate_kib * 1024, args.state)
    for r in result["rounds"]:
        print(f"{r['processes']} process(es): x{r['ratio_images_per_s_to_1']} images/s, "
              f"x{r['ratio_bytes_per_s_to_1']} bytes/s, {r['fraction_of_ceiling']} of the I/O ceiling; "
              f"steady (completions 10%-90%) x{r['ratio_steady_to_1']}")  # fmt: skip
    common.write_result(args.name, result)


if __name__ == "__main__":
    main()
