"""Benchmark 2, fill throughput: an image with >= 2 GiB of layers the cache lacks, filled by the fetcher.

In the same run, side by side, with the same concurrency as the fetcher (one transfer per blob, at most
`fetcher.workers`):
  - the pipe limit: plain concurrent GETs of the same blobs from the upstream (streamed, discarded) and plain
    concurrent PUTs of the same bytes to the S3 server, two ways: minio's put_object fed by a generator (the SDK's
    default: every part's SHA-256 signed), and layerfill's own upload from the local files (parts sent as
    UNSIGNED-PAYLOAD, as the fetcher sends them with `s3.sign_parts` off). The pipe is the slower of the GETs and
    the faster of the PUTs: the best this run could move, so the fetcher's cheaper PUTs are not counted as a gain;
  - the relay: each blob GET from the upstream streamed straight into layerfill's upload (unsigned parts, the same
    part size and concurrency), verifying nothing: the bytes' whole path with nothing of the product's work on it.
    On a machine where the upstream registry, the S3 server and the fetcher share the cores, GETs and PUTs alone
    each overstate what a copy can do; the relay is the pipe a copy runs through;
  - `skopeo copy docker://<upstream>/<image> dir:<tmp>` of the same image;
  - the fetcher's fill: fetched bytes / (ImageCached.completed_at - started_at), and its peak RSS.
With --py-spy FILE the timed fill is sampled by py-spy (every thread, idle ones too; speedscope JSON): where the
fetcher's time goes when it is the limit. With --profile-mem the cache is emptied and the image filled once more under tracemalloc (slower, so not timed):
the top allocation sites near the traced peak show where the memory goes (bench/memhook/sitecustomize.py).
Afterwards the image's blobs are deleted from the upstream's storage, the cache bucket and the temp dirs.

    .venv/bin/python -m bench.fill_throughput [--layers 8 --layer-mib 440] [--profile-mem]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests
from minio import Minio

from bench import common
from layerfill.config.settings import Settings
from layerfill.oci.manifest import Platform
from layerfill.sinks.budget import ByteBudget
from layerfill.sinks.layout import blob_data_key, repository_prefix, storage_prefix
from layerfill.sinks.multipart import upload
from layerfill.sinks.s3client import make_http_pool, make_minio
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, ensure_up

CHUNK = 1024 * 1024
MEMHOOK = Path(__file__).parent / "memhook"
Blob = tuple[str, int, Path]  # digest, size, file in the layout


def build_image(root: Path, layers: int, layer_bytes: int, seed: int) -> tuple[list[Blob], float]:
    start = time.monotonic()
    layout = OciLayout(root)
    made = [layout.add_random_layer(layer_bytes, seed + i) for i in range(layers)]
    image = layout.add_image(made, Platform("linux", "amd64"))
    layout.tag("1", image.manifest)
    layout.save()
    blobs = [(d.digest, d.size, _blob_path(root, d.digest)) for d in (b.descriptor() for b in made)]
    return blobs, time.monotonic() - start


def _blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


def concurrent(fn, blobs: list[Blob], workers: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        moved = sum(pool.map(fn, blobs))
    secs = time.monotonic() - start
    return {"bytes": moved, "seconds": round(secs, 2), "bytes_per_s": round(moved / secs)}


def get_blob(upstream: str, repo: str) -> callable:  # type: ignore[valid-type]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

    def one(blob: Blob) -> int:
        n = 0
        with session.get(f"{upstream}/v2/{repo}/blobs/{blob[0]}", stream=True, timeout=60) as r:
            r.raise_for_status()
            for chunk in r.iter_content(CHUNK):
                n += len(chunk)
        return n

    return one


class _GenReader:
    """A file-like `read()` over a generator of chunks, as a streamed upload source."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, n: int = -1) -> bytes:
        # Pieces are joined once per read: minio asks for a whole part (16 MiB) at a time.
        pieces, have = [self._rest], len(self._rest)
        while n < 0 or have < n:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            pieces.append(chunk)
            have += len(chunk)
        data = b"".join(pieces)
        if n < 0 or len(data) <= n:
            self._rest = b""
            return data
        self._rest = data[n:]
        return data[:n]


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def put_blob(client: Minio, bucket: str, scratch: str, part: int) -> callable:  # type: ignore[valid-type]
    def one(blob: Blob) -> int:
        digest, size, path = blob
        client.put_object(bucket, f"{scratch}{digest.split(':')[1]}", _GenReader(_file_chunks(path)), size,
                          part_size=part)  # fmt: skip
        return size

    return one


def put_blob_unsigned(client: Minio, bucket: str, scratch: str, part: int) -> callable:  # type: ignore[valid-type]
    """layerfill's multipart upload of the local file, parts unsigned: the fetcher's PUTs without its GETs."""
    budget = ByteBudget(64 * part)  # never the limit here

    def one(blob: Blob) -> int:
        digest, size, path = blob
        with path.open("rb") as f:
            upload(client, bucket, f"{scratch}u-{digest.split(':')[1]}", f, size, part_size=part, budget=budget,
                   content_type="application/octet-stream", unsigned_parts=True)  # fmt: skip
        return size

    return one


class _ChunkReader:
    """`readinto` over a chunk iterator (the relay's upload source)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = memoryview(b"")

    def readinto(self, buffer: bytearray | memoryview) -> int:
        out, have = memoryview(buffer).cast("B"), 0
        while have < len(out):
            if not self._rest:
                chunk = next(self._chunks, b"")
                if not chunk:
                    break
                self._rest = memoryview(chunk)
            take = min(len(out) - have, len(self._rest))
            out[have : have + take] = self._rest[:take]
            self._rest, have = self._rest[take:], have + take
        return have


def relay_blob(upstream: str, repo: str, client: Minio, bucket: str, scratch: str, part: int) -> callable:  # type: ignore[valid-type]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
    budget = ByteBudget(64 * part)

    def one(blob: Blob) -> int:
        digest, size, _ = blob
        with session.get(f"{upstream}/v2/{repo}/blobs/{digest}", stream=True, timeout=60) as r:
            r.raise_for_status()
            reader = _ChunkReader(r.raw.stream(CHUNK, decode_content=False))
            upload(client, bucket, f"{scratch}r-{digest.split(':')[1]}", reader, size, part_size=part, budget=budget,
                   content_type="application/octet-stream", unsigned_parts=True)  # fmt: skip
        return size

    return one


def skopeo_copy(upstream_registry: str, repo: str, dest: Path) -> float:
    start = time.monotonic()
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                    f"docker://{upstream_registry}/{repo}:1", f"dir:{dest}"],
                   check=True, capture_output=True, timeout=1800)  # fmt: skip
    return time.monotonic() - start


def fetcher_fill(devstack: DevStack, wd: Path, prefix: str, repo: str, digest: str, env: dict | None = None,
                 py_spy: Path | None = None) -> dict:  # fmt: skip
    p = Pipeline(
        devstack,
        wd / "pipeline",
        partitions=1,
        routes=[common.route(devstack, prefix, **common.NO_DEFER)],
        state="sqlite",
    )  # as docs/benchmarks.md measured
    try:
        proc = p.start("fetcher", env=env)
        rss_at_start = psutil.Process(proc.pid).memory_info().rss
        spy = _py_spy(proc.pid, py_spy) if py_spy else None
        with common.PeakRss(proc.pid) as rss:
            t0 = time.monotonic()
            common.produce_pulls(p.settings.kafka.bootstrap_servers, p.topics.manifest_pulled.name,
                                 [(devstack.proxy_registry, repo, digest)], 1)  # fmt: skip
            cached = p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == digest for r in rs),
                            timeout=1800)  # fmt: skip
            end_to_end = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(timeout=120)
        ic = next(r for r in cached if r["digest"] == digest)
        secs = (ic["completed_at"] - ic["started_at"]).total_seconds()
        return {
            "fetched_bytes": ic["fetched_bytes"],
            "seconds": round(secs, 2),
            "bytes_per_s": round(ic["fetched_bytes"] / secs),
            "publish_to_image_cached_seconds": round(end_to_end, 2),
            "peak_rss_mib": round(rss.peak / 2**20, 1),
            "rss_before_fill_mib": round(rss_at_start / 2**20, 1),
        }
    finally:
        p.close()


def _py_spy(pid: int, out: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--idle", "--threads", "--rate", "50",
                             "--format", "speedscope", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def profiled_fill(devstack: DevStack, wd: Path, prefix: str, repo: str, digest: str) -> dict:
    """The same fill under tracemalloc; returns the top allocation sites near the traced peak."""
    out = wd / "memhook.json"
    path = os.pathsep.join(p for p in (str(MEMHOOK), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "LAYERFILL_MEMHOOK_OUT": str(out)}
    fill = fetcher_fill(devstack, wd / "profiled", prefix, repo, digest, env)  # its own state: fill it all again
    profile = json.loads(out.read_text())
    root = str(Path(__file__).resolve().parents[1]) + "/"
    for row in profile["top"]:
        site = row["site"].replace(root, "")
        row["site"] = site.split("site-packages/", 1)[-1]
    return {"peak_rss_mib": fill["peak_rss_mib"], "traced_peak_mib": round(profile["traced_bytes"] / 2**20, 1),
            "top": profile["top"]}  # fmt: skip


def clean_s3(client: Minio, bucket: str, prefixes: list[str]) -> int:
    from minio.deleteobjects import DeleteObject

    n = 0
    for prefix in prefixes:
        objs = [DeleteObject(o.object_name) for o in client.list_objects(bucket, prefix, recursive=True)]
        n += len(objs)
        for err in client.remove_objects(bucket, objs):
            print(f"S3 delete failed: {err}")
    return n


def clean_upstream(devstack: DevStack, repo_top: str, digests: list[str]) -> None:
    """The upstream is a filesystem distribution registry: remove the benchmark's repository and blob data."""
    root = devstack.ctx.paths.state / "data" / "upstream" / "docker" / "registry" / "v2"
    common.remove(root / "repositories" / repo_top)
    for d in digests:
        h = d.split(":", 1)[1]
        common.remove(root / "blobs" / "sha256" / h[:2] / h)


def run(
    devstack: DevStack,
    settings: Settings,
    wd: Path,
    prefix: str,
    blobs: list[Blob],
    build_s: float,
    profile_mem: bool = False,
    py_spy: Path | None = None,
) -> dict:
    repo = f"{prefix}/big"
    layers = len(blobs)
    workers = min(layers, settings.fetcher.workers)
    upstream = f"http://{devstack.upstream_registry}"
    s3 = make_minio(settings.s3, make_http_pool(max_connections=32))
    bucket, root = settings.s3.bucket, settings.s3.root_directory
    scratch = f"{storage_prefix(root)}bench-scratch/{prefix}/"
    digests = [b[0] for b in blobs]
    total = sum(b[1] for b in blobs)
    try:
        t = time.monotonic()
        push_image(wd / "layout", "1", devstack.upstream_registry, repo, timeout=1800)
        print(f"pushed to the upstream in {time.monotonic() - t:.0f}s")
        manifest_digest = _tagged_digest(wd / "layout")

        gets = concurrent(get_blob(upstream, repo), blobs, workers)
        print(f"plain GETs:  {gets['bytes_per_s'] / 2**20:.0f} MiB/s")
        puts = concurrent(put_blob(s3, bucket, scratch, settings.fetcher.part_bytes), blobs, workers)
        print(f"plain PUTs:  {puts['bytes_per_s'] / 2**20:.0f} MiB/s (minio put_object, signed parts)")
        clean_s3(s3, bucket, [scratch])
        unsigned = concurrent(put_blob_unsigned(s3, bucket, scratch, settings.fetcher.part_bytes), blobs, workers)
        print(f"plain PUTs:  {unsigned['bytes_per_s'] / 2**20:.0f} MiB/s (layerfill's upload, unsigned parts)")
        clean_s3(s3, bucket, [scratch])
        part = settings.fetcher.part_bytes
        relay = concurrent(relay_blob(upstream, repo, s3, bucket, scratch, part), blobs, workers)
        print(f"relay:       {relay['bytes_per_s'] / 2**20:.0f} MiB/s (GET streamed into the upload, nothing verified)")
        clean_s3(s3, bucket, [scratch])
        fill = fetcher_fill(devstack, wd, prefix, repo, manifest_digest, py_spy=py_spy)
        print(f"fetcher:     {fill['bytes_per_s'] / 2**20:.0f} MiB/s, peak RSS {fill['peak_rss_mib']:.0f} MiB")
        cached_blobs = [repository_prefix(root, repo)] + [
            blob_data_key(root, d).rsplit("/", 1)[0] + "/" for d in digests
        ]
        mem = None
        if profile_mem:
            clean_s3(s3, bucket, cached_blobs)  # the profiled fill must transfer every blob again
            try:
                mem = profiled_fill(devstack, wd, prefix, repo, manifest_digest)
                print(f"profiled:    traced peak {mem['traced_peak_mib']} MiB, RSS {mem['peak_rss_mib']} MiB")
            except Exception as exc:  # keep the timed figures
                mem = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                print(f"profiled fill failed: {mem['error']}")
        skopeo_s = skopeo_copy(devstack.upstream_registry, repo, wd / "skopeo")
        skopeo = {"bytes": total, "seconds": round(skopeo_s, 2), "bytes_per_s": round(total / skopeo_s)}
        print(f"skopeo copy: {skopeo['bytes_per_s'] / 2**20:.0f} MiB/s")
    finally:
        with contextlib.suppress(Exception):
            removed = clean_s3(s3, bucket, [scratch, repository_prefix(root, repo)]
                               + [blob_data_key(root, d).rsplit("/", 1)[0] + "/" for d in digests])  # fmt: skip
            print(f"removed {removed} objects from the cache bucket")
        clean_upstream(devstack, prefix, digests)
        common.remove(wd)
    best_put = max(puts["bytes_per_s"], unsigned["bytes_per_s"])
    pipe = min(gets["bytes_per_s"], best_put)
    result = {
        "layers": layers,
        "total_bytes": total,
        "concurrency": workers,
        "settings": {
            "fetcher.workers": settings.fetcher.workers,
            "fetcher.part_bytes": settings.fetcher.part_bytes,
            "fetcher.buffer_bytes": getattr(settings.fetcher, "buffer_bytes", None),
        },
        "image_build_seconds": round(build_s, 1),
        "plain_get": gets,
        "plain_put": puts,
        "plain_put_unsigned_parts": unsigned,
        "relay": relay,
        "pipe_limit_bytes_per_s": pipe,
        "pipe_limited_by": "upstream GET" if gets["bytes_per_s"] <= best_put else "S3 PUT",
        "fetcher": fill,
        "skopeo_copy": skopeo,
        "ratio_fetcher_to_pipe": common.ratio(fill["bytes_per_s"], pipe),
        "ratio_fetcher_to_relay": common.ratio(fill["bytes_per_s"], relay["bytes_per_s"]),
        "ratio_fetcher_to_skopeo": common.ratio(fill["bytes_per_s"], skopeo["bytes_per_s"]),
        "targets": {"ratio_to_pipe": 0.95, "peak_rss_mib": 256},
    }
    if mem is not None:
        result["memory_profile"] = mem
    return result


def _tagged_digest(layout: Path) -> str:
    from layerfill.testimages.layout import read_tags

    return read_tags(layout)["1"].digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=8, help="one transfer each, up to fetcher.workers at once")
    ap.add_argument("--layer-mib", type=int, default=440)
    ap.add_argument("--name", default="fill_throughput", help="results file name under bench/results/")
    ap.add_argument("--profile-mem", action="store_true", help="fill again under tracemalloc: top allocation sites")
    ap.add_argument("--py-spy", type=Path, metavar="FILE", help="sample the timed fill with py-spy (speedscope JSON)")
    args = ap.parse_args()
    prefix = common.run_id("benchfill")
    wd = common.workdir(prefix)
    try:
        # Built before taking the e2e lock: a minute of CPU that needs no shared service.
        blobs, build_s = build_image(wd / "layout", args.layers, args.layer_mib * 2**20, seed=int(prefix[-8:], 16))
        print(f"built {args.layers} layers, {sum(b[1] for b in blobs) / 2**30:.2f} GiB, in {build_s:.0f}s")
        with common.e2e_lock():
            devstack = ensure_up()
            result = run(
                devstack,
                devstack.settings(),
                wd,
                prefix,
                blobs,
                build_s,
                args.profile_mem,
                args.py_spy.resolve() if args.py_spy else None,
            )
    finally:
        common.remove(wd)
    print(f"fetcher/pipe = {result['ratio_fetcher_to_pipe']}, fetcher/relay = {result['ratio_fetcher_to_relay']}, "
          f"fetcher/skopeo = {result['ratio_fetcher_to_skopeo']}")  # fmt: skip
    common.write_result(args.name, result)


if __name__ == "__main__":
    main()
