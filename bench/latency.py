"""Benchmark 3, latency: from the proxy registry's answer to a client's manifest pull to (a) the first byte of a
missing layer fetched from the upstream and (b) ImageCached, p50 and p99 over N pulls (default 100) of each kind:
  - missing: a new image whose 20 MiB layer the cache does not have (a new repository per pull);
  - present: a new repository whose blobs the cache already has (pulled through the proxy beforehand, blob by
    blob, without the manifest), so the fetcher meets the image for the first time and finds nothing missing.

The real path: a client GETs the manifest from the proxy (devstack, 15001); the proxy notifies the bridge
(`layerfill run bridge` on the devstack's bridge port); bridge -> Kafka -> `layerfill run fetcher` -> upstream.
The fetcher's route points at a timing relay (bench/relay.py) in front of the upstream, which records when each
request arrived and when the upstream's first body byte came back. ImageCached is timed when a read_committed
consumer in this process reads it (its Kafka CreateTime is recorded too). All times are this machine's wall
clock. Pulls alternate between the kinds, one at a time, with a random pause of 0 to 0.5 s between them, so
they land at random points of the fetcher's consume cycle.

    .venv/bin/python -m bench.latency [--pulls 100 --layer-mib 20]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from typing import Any

import requests
from minio import Minio

from bench import common
from bench.fill_throughput import clean_s3, clean_upstream
from bench.relay import Relay
from layerfill.sinks.layout import blob_data_key, layer_link_key, repository_prefix
from layerfill.sinks.s3client import make_http_pool, make_minio
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, ensure_up

ACCEPT = ", ".join([common.OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"])
TARGET_FIRST_BYTE_P50_S = 0.2


def push_images(devstack: DevStack, prefix: str, pulls: int, layer_bytes: int, seed: int) -> dict[str, list]:
    """`pulls` + 1 images of each kind (the first of each is a warm-up, not measured)."""
    pusher = common.ApiPusher(devstack.upstream_registry)
    try:
        missing = []
        for i in range(pulls + 1):
            repo = f"{prefix}/miss-{i:03d}"
            layer = common.random_tar_layer(layer_bytes, seed + i)
            digest = pusher.blob(repo, layer)
            missing.append(pusher.image(repo, "1", [(digest, len(layer))], note=repo))
        present = []
        shared = common.random_tar_layer(layer_bytes, seed - 1)
        first = f"{prefix}/full-000"
        shared_digest = pusher.blob(first, shared)
        for i in range(pulls + 1):
            repo = f"{prefix}/full-{i:03d}"
            if i:
                pusher.mount(repo, shared_digest, first)
            present.append(pusher.image(repo, "1", [(shared_digest, len(shared))], note=repo))
        return {"missing": missing, "present": present}
    finally:
        pusher.close()


def warm_cache(devstack: DevStack, s3: Minio, bucket: str, root: str, images: list[common.PushedImage]) -> float:
    """Pull every blob (not the manifest) of `images` through the proxy, one at a time (the proxy stores a blob
    only for the first of concurrent requests), then wait until storage links each into its repository."""
    start = time.monotonic()
    session = requests.Session()
    for img in images:
        for digest in img.blobs:
            url = f"http://{devstack.proxy_registry}/v2/{img.repository}/blobs/{digest}"
            with session.get(url, stream=True, timeout=120) as r:
                r.raise_for_status()
                for _ in r.iter_content(1 << 20):
                    pass
    session.close()
    deadline = time.monotonic() + 120
    for img in images:
        for digest in img.blobs:
            key = layer_link_key(root, img.repository, digest)
            while True:
                try:
                    s3.stat_object(bucket, key)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the proxy did not link {digest} into {img.repository}") from None
                    time.sleep(0.1)
    return time.monotonic() - start


def pull_once(session: requests.Session, devstack: DevStack, p: Pipeline, relay: Relay, watch: common.TopicWatch,
              img: common.PushedImage, kind: str) -> dict[str, Any]:  # fmt: skip
    url = f"http://{devstack.proxy_registry}/v2/{img.repository}/manifests/{img.tag}"
    t_request = time.time()
    r = session.get(url, headers={"Accept": ACCEPT}, timeout=60)
    t_answer = time.time()
    r.raise_for_status()
    ic_topic, mp_topic = p.topics.image_cached.name, p.topics.manifest_pulled.name
    got = watch.wait(ic_topic, img.repository, timeout=60)
    mp = watch.find(mp_topic, img.repository)
    row: dict[str, Any] = {"kind": kind, "repository": img.repository, "t_request": t_request, "t_answer": t_answer,
                           "manifest_pulled_events": len(mp)}  # fmt: skip
    if mp:
        row["t_manifest_pulled_record"] = mp[0].t_record
    manifest_hit = relay.first(f"/{img.repository}/manifests/")
    if manifest_hit is not None:
        row["t_upstream_manifest_request"] = manifest_hit.t_request
    layer = img.layers[0][0]
    hit = relay.first(f"/{img.repository}/blobs/{layer}")
    if hit is not None:
        row.update(t_layer_request=hit.t_request, t_layer_first_byte=hit.t_first_byte, t_layer_done=hit.t_done)
    if got:
        ic = got[0]
        row.update(t_image_cached_seen=ic.t_seen, t_image_cached_record=ic.t_record,
                   fill_started_at=ic.value["started_at"].timestamp(),
                   fill_completed_at=ic.value["completed_at"].timestamp(),
                   fetched_bytes=ic.value["fetched_bytes"])  # fmt: skip
    return row


def breakdown(rows: list[dict[str, Any]]) -> dict[str, dict]:
    """Per-stage latencies (seconds -> ms summaries), each measured from the previous observable point."""
    stages = {
        "answer_to_first_byte": ("t_answer", "t_layer_first_byte"),
        "answer_to_image_cached": ("t_answer", "t_image_cached_seen"),
        "request_to_answer (client GET)": ("t_request", "t_answer"),
        "answer_to_manifest_pulled_record (proxy notify + bridge + Kafka ack)": ("t_answer", "t_manifest_pulled_record"),
        "manifest_pulled_record_to_upstream_manifest_get (fetcher consume + state lookup)": (
            "t_manifest_pulled_record", "t_upstream_manifest_request"),
        "upstream_manifest_get_to_layer_get (resolve, store manifest, plan, storage checks)": (
            "t_upstream_manifest_request", "t_layer_request"),
        "layer_get_to_first_byte (upstream)": ("t_layer_request", "t_layer_first_byte"),
        "first_byte_to_layer_done (transfer)": ("t_layer_first_byte", "t_layer_done"),
        "layer_done_to_fill_completed (last S3 part, verify, link)": ("t_layer_done", "fill_completed_at"),
        "fill_completed_to_image_cached_seen (transaction commit + read)": ("fill_completed_at", "t_image_cached_seen"),
        "manifest_pulled_record_to_image_cached_seen": ("t_manifest_pulled_record", "t_image_cached_seen"),
    }  # fmt: skip
    out = {}
    for name, (a, b) in stages.items():
        vals = [r[b] - r[a] for r in rows if r.get(a) is not None and r.get(b) is not None]
        if vals:
            out[name] = common.summary_ms(vals)
    return out


def run(devstack: DevStack, pulls: int, layer_mib: int) -> dict[str, Any]:
    prefix = common.run_id("benchlat")
    wd = common.workdir(prefix)
    settings = devstack.settings()
    s3 = make_minio(settings.s3, make_http_pool(max_connections=8))
    bucket, root = settings.s3.bucket, settings.s3.root_directory
    images: dict[str, list[common.PushedImage]] = {"missing": [], "present": []}
    rows: list[dict[str, Any]] = []
    try:
        t = time.monotonic()
        images = push_images(devstack, prefix, pulls, layer_mib * 2**20, seed=int(prefix[-8:], 16))
        push_s = time.monotonic() - t
        print(f"pushed {2 * (pulls + 1)} images to the upstream in {push_s:.0f}s")
        with Relay(f"http://{devstack.upstream_registry}") as relay:
            p = Pipeline(
                devstack,
                wd / "pipeline",
                routes=[common.route(devstack, prefix, upstream_url=relay.url, **common.NO_DEFER)],
                state="sqlite",
            )  # as docs/benchmarks.md measured
            try:
                p.start("bridge")  # first: the warm-up's blob-pull notifications reach it (and are ignored)
                warm_s = warm_cache(devstack, s3, bucket, root, images["present"])
                print(f"'present' blobs pulled through the proxy and linked in {warm_s:.0f}s")
                p.start("fetcher")
                topics = [p.topics.manifest_pulled.name, p.topics.image_cached.name]
                with common.TopicWatch(p.settings.kafka.bootstrap_servers, topics, prefix) as watch:
                    session = requests.Session()
                    rng = random.Random(0)
                    order = [(i, kind) for i in range(pulls + 1) for kind in ("missing", "present")]
                    for n, (i, kind) in enumerate(order):
                        time.sleep(rng.uniform(0, 0.5))
                        row = pull_once(session, devstack, p, relay, watch, images[kind][i], kind)
                        row["warm_up"] = i == 0
                        rows.append(row)
                        if n % 20 == 19:
                            print(f"  {n + 1}/{len(order)} pulls")
                    # The nothing-missing case may emit nothing: give late records a last chance.
                    time.sleep(2)
                    for row in rows:
                        if "t_image_cached_seen" not in row:
                            late = watch.find(p.topics.image_cached.name, row["repository"])
                            row["image_cached_late"] = bool(late)
                    outcomes = common.fetcher_events(p.health_ports["fetcher"])
            finally:
                p.close()
    finally:
        with contextlib.suppress(Exception):
            digests = {d for imgs in images.values() for img in imgs for d in img.blobs}
            removed = clean_s3(s3, bucket, [repository_prefix(root, prefix)]
                               + [blob_data_key(root, d).rsplit("/", 1)[0] + "/" for d in digests])  # fmt: skip
            print(f"removed {removed} objects from the cache bucket")
            clean_upstream(devstack, prefix, sorted(digests))
        common.remove(wd)
    return summarize(rows, pulls, layer_mib, push_s, outcomes)


def summarize(rows: list[dict[str, Any]], pulls: int, layer_mib: int, push_s: float,
              outcomes: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    measured = [r for r in rows if not r["warm_up"]]
    result: dict[str, Any] = {"pulls_per_kind": pulls, "layer_mib": layer_mib, "push_seconds": round(push_s, 1),
                              "fetcher_outcomes": outcomes}  # fmt: skip
    for kind in ("missing", "present"):
        mine = [r for r in measured if r["kind"] == kind]
        result[kind] = {
            "pulls": len(mine),
            "image_cached_emitted": sum(1 for r in mine if "t_image_cached_seen" in r),
            "layer_fetched_from_upstream": sum(1 for r in mine if r.get("t_layer_first_byte") is not None),
            "fetched_bytes_median": common.percentile([r["fetched_bytes"] for r in mine if "fetched_bytes" in r], 50),
            "stages": breakdown(mine),
        }
    first = result["missing"]["stages"].get("answer_to_first_byte", {})
    p50 = first.get("p50_ms")
    result["target"] = {"first_byte_p50_ms": TARGET_FIRST_BYTE_P50_S * 1000,
                        "met": p50 is not None and p50 <= TARGET_FIRST_BYTE_P50_S * 1000}  # fmt: skip
    result["rows"] = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    return result


def report(result: dict[str, Any]) -> None:
    for kind in ("missing", "present"):
        r = result[kind]
        print(f"\n{kind}: {r['pulls']} pulls, ImageCached for {r['image_cached_emitted']}, "
              f"layer fetched for {r['layer_fetched_from_upstream']}, median fetched bytes {r['fetched_bytes_median']}")  # fmt: skip
        for name, s in r["stages"].items():
            print(f"  {name:<90} p50 {s['p50_ms']:>8} ms  p99 {s['p99_ms']:>8} ms  (n={s['n']})")
    print(f"\ntarget first byte p50 <= {result['target']['first_byte_p50_ms']:.0f} ms: met={result['target']['met']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pulls", type=int, default=100, help="measured pulls of each kind (plus one warm-up each)")
    ap.add_argument("--layer-mib", type=int, default=20)
    ap.add_argument("--name", default="latency", help="results file name under bench/results/")
    args = ap.parse_args()
    with common.e2e_lock():
        result = run(ensure_up(), args.pulls, args.layer_mib)
    report(result)
    common.write_result(args.name, result)


if __name__ == "__main__":
    main()
