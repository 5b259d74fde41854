"""Benchmark 5, upstream egress: what layerfill costs the upstream next to what the proxy cache itself costs it,
counted from the upstream registry's own access log (tests/support/upstream_log.py, by User-Agent), in one run:

  cold     a client with nothing pulls a fresh 3 x 24 MiB image through the proxy (target: layerfill's upstream
           blob bytes <= 5% of the image; no manifest GET);
  skipped  a client that already has a 24 MiB base (from elsewhere) pulls an image on it through the proxy, so the
           cache never sees the base (target: layerfill fetches exactly the base, once); repeated `--skips` times
           for the time from the end of the client's pull to ImageCached (target p50 <= 2 s);
  index    an OCI index pulled for one platform (target: <= 1 manifest GET per child nobody pulled, 0 for the rest);
  shared   8 images on one 24 MiB base the cache never saw, pulled at once by clients that have the base, with 4
           fetcher processes (target: the base fetched once).

The real path: skopeo -> proxy (devstack) -> notifications -> `layerfill run bridge` -> Kafka -> `layerfill run
fetcher` (processes). `--fetcher-pythonpath DIR` runs the fetchers from another source tree (the "before" figures
of docs/benchmarks.md come from the base commit's tree this way).

    .venv/bin/python -m bench.egress [--layer-mib 24 --skips 10 --shared 8 --fetchers 4] [--data docs/bench-data/egress.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import common
from tests.support.clients import skopeo_pull
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, ensure_up
from tests.support.upstream_images import Layer, gzip_layer, push_image, push_index
from tests.support.upstream_log import Request, UpstreamLog, blob_bytes, blob_gets, manifest_gets

MiB = 1024 * 1024
TARGETS = {"cold_blob_share": 0.05, "skipped_extra_bytes": 0, "manifest_gets_per_pulled_image": 0,
           "manifest_gets_per_unpulled_child": 1, "shared_base_gets": 1, "skipped_to_cached_p50_s": 2.0}  # fmt: skip


class Scenario:
    def __init__(self, name: str, image_bytes: int, reqs: list[Request], pulled_images: int, **extra: Any) -> None:
        self.name = name
        self.image_bytes = image_bytes
        self.proxy_blob_bytes = blob_bytes(reqs, "proxy")
        self.layerfill_blob_bytes = blob_bytes(reqs, "layerfill")
        self.layerfill_manifest_gets = len(manifest_gets(reqs, "layerfill"))
        self.layerfill_blob_gets = len(blob_gets(reqs, "layerfill"))
        self.proxy_blob_gets = len(blob_gets(reqs, "proxy"))
        self.pulled_images = pulled_images
        self.extra = extra

    def data(self) -> dict[str, Any]:
        return {"name": self.name, "image_bytes": self.image_bytes, "proxy_blob_bytes": self.proxy_blob_bytes,
                "layerfill_blob_bytes": self.layerfill_blob_bytes,
                "layerfill_manifest_gets": self.layerfill_manifest_gets}  # fmt: skip

    def full(self) -> dict[str, Any]:
        return {**self.data(), "layerfill_blob_gets": self.layerfill_blob_gets, "proxy_blob_gets": self.proxy_blob_gets,
                "pulled_images": self.pulled_images, **self.extra}  # fmt: skip


class Bench:
    def __init__(self, devstack: DevStack, prefix: str, layer: int, fetchers: int, pythonpath: str | None) -> None:
        self.devstack = devstack
        self.prefix = prefix
        self.layer = layer
        self.wd = common.workdir(prefix)
        self.log = UpstreamLog(devstack.ctx.paths.logs / "upstream.log")
        self.registry = devstack.upstream_registry
        self.seed = int(prefix[-8:], 16)
        route = common.route(devstack, prefix)
        self.p = Pipeline(devstack, self.wd / "pipeline", partitions=8, routes=[route])
        self.fetcher_env = {"PYTHONPATH": pythonpath} if pythonpath else {}
        self.fetchers = fetchers
        self.watch: common.TopicWatch | None = None

    def layers(self, n: int, size: int) -> list[Layer]:
        first, self.seed = self.seed, self.seed + n  # each layer its own seed: never one the cache has seen
        return [gzip_layer(size, first + i) for i in range(n)]

    def start(self) -> None:
        self.p.start("bridge")
        for i in range(self.fetchers):
            self.start_fetcher(f"fetcher-{i}")
        if self.fetchers > 1:
            common.wait_group(self.p.settings.kafka.bootstrap_servers, f"{self.p.id}-fetcher",
                              self.fetchers, 8)  # fmt: skip
        self.watch = common.TopicWatch(self.p.settings.kafka.bootstrap_servers, [self.p.topics.image_cached.name],
                                       self.prefix).__enter__()  # fmt: skip

    def start_fetcher(self, name: str) -> None:
        if not self.fetcher_env:
            self.p.start("fetcher", name=name)
            return
        # `python -m` puts the working directory first on sys.path: run from the other tree so it wins.
        log = open(self.p.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen([sys.executable, "-m", "layerfill.cli.main", "run", "fetcher"],
                                env={**self.p.env(name), **self.fetcher_env}, cwd=self.fetcher_env["PYTHONPATH"],
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        self.p.procs[name] = proc
        self.p._wait_http(f"http://127.0.0.1:{self.p.health_ports[name]}/readyz", proc, name)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.__exit__()
        self.p.close()
        common.remove(self.wd)

    def cached(self, repository: str, timeout: float = 300) -> float:
        assert self.watch is not None
        seen = self.watch.wait(self.p.topics.image_cached.name, repository, timeout)
        if not seen:
            raise TimeoutError(f"no ImageCached for {repository} within {timeout}s")
        return seen[0].t_seen

    def pull(self, registry: str, repository: str, layout: Path, tag: str, **kw: Any) -> float:
        res = skopeo_pull(registry, repository, "1", layout, tag=tag, **kw)
        if res.returncode != 0:
            raise RuntimeError(f"skopeo pull of {repository} failed: {res.stderr}")
        return time.time()

    # -- scenarios ----------------------------------------------------------------------------------
    def cold(self) -> Scenario:
        img = push_image(self.registry, f"{self.prefix}/cold", self.layers(3, self.layer))
        self.log.mark()
        self.pull(self.devstack.proxy_registry, img.repository, self.wd / "cold", "cold")
        self.cached(img.repository)
        reqs = self.log.requests(img.repository)
        return Scenario("cold pull, client with nothing (3 x layer)", img.layer_bytes, reqs, 1)

    def skipped(self, reps: int) -> Scenario:
        latencies: list[float] = []
        reqs: list[Request] = []
        base_bytes = 0
        for i in range(reps):
            base, app_a, app_b = self.layers(1, self.layer)[0], *self.layers(2, MiB)
            a = push_image(self.registry, f"{self.prefix}/skip-{i}/a", [base, app_a])
            b = push_image(self.registry, f"{self.prefix}/skip-{i}/b", [app_b], mounted=[(base, a.repository)])
            size = base.size
            layout = self.wd / f"skip-{i}"
            self.pull(self.devstack.upstream_registry, a.repository, layout, "a")  # the base from elsewhere
            self.log.mark()
            pulled = self.pull(self.devstack.proxy_registry, b.repository, layout, "b")
            latencies.append(self.cached(b.repository) - pulled)
            reqs += self.log.requests(b.repository)
            base_bytes += size
        p50 = common.percentile(latencies, 50)
        return Scenario("client skipped a layer the cache never saw", base_bytes, reqs, reps,
                        skipped_layer_bytes=base_bytes, pull_end_to_image_cached_s=[round(x, 3) for x in latencies],
                        p50_s=None if p50 is None else round(p50, 3))  # fmt: skip

    def index(self) -> Scenario:
        index = push_index(self.registry, f"{self.prefix}/idx/multi", ["amd64", "arm64"], layer_size=self.layer)
        self.log.mark()
        self.pull(self.devstack.proxy_registry, index.repository, self.wd / "idx", "idx", arch="amd64")
        self.cached(index.repository)
        reqs = self.log.requests(index.repository)
        unpulled = {index.children["arm64"].digest}
        gets = [r.reference for r in manifest_gets(reqs, "layerfill")]
        image = sum(img.layer_bytes + img.config_size for img in index.children.values())
        return Scenario("index (2 platforms) pulled for one", image, reqs, 1, unpulled_children=len(unpulled),
                        manifest_gets_of_unpulled=sum(1 for g in gets if g in unpulled),
                        manifest_gets_of_pulled=sum(1 for g in gets if g not in unpulled))  # fmt: skip

    def shared(self, n: int) -> Scenario:
        base = self.layers(1, self.layer)[0]
        first = push_image(self.registry, f"{self.prefix}/shared/seed", [base])
        digest, size = base.digest, base.size
        images = [push_image(self.registry, f"{self.prefix}/shared/img-{i}", self.layers(1, MiB),
                             mounted=[(base, first.repository)]) for i in range(n)]  # fmt: skip
        template = self.wd / "shared-template"
        self.pull(self.devstack.upstream_registry, first.repository, template, "seed")  # clients have the base
        layouts = []
        for i in range(n):
            layouts.append(self.wd / f"shared-{i}")
            shutil.copytree(template, layouts[-1])
        self.log.mark()
        errors: list[BaseException] = []

        def pull(i: int) -> None:
            try:
                self.pull(self.devstack.proxy_registry, images[i].repository, layouts[i], "img")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=pull, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for img in images:
            self.cached(img.repository)
        reqs = self.log.requests(f"{self.prefix}/shared/")
        base_gets = len(blob_gets(reqs, "layerfill", digest))
        return Scenario(f"{n} images sharing one missing base, {self.fetchers} fetchers", size, reqs, n,
                        base_gets_by_layerfill=base_gets,
                        base_gets_by_proxy=len(blob_gets(reqs, "proxy", digest)))  # fmt: skip


def run(devstack: DevStack, layer_mib: int, skips: int, shared: int, fetchers: int,
        pythonpath: str | None) -> dict[str, Any]:  # fmt: skip
    prefix = common.run_id("benchegress")
    b = Bench(devstack, prefix, layer_mib * MiB, fetchers, pythonpath)
    try:
        b.start()
        scenarios = [b.cold(), b.skipped(skips), b.index(), b.shared(shared)]
    finally:
        b.close()
    return summarize(scenarios, layer_mib, fetchers, pythonpath)


def summarize(sc: list[Scenario], layer_mib: int, fetchers: int, pythonpath: str | None) -> dict[str, Any]:
    cold, skipped, index, shared = sc
    figures = {
        "cold_blob_share": round(cold.layerfill_blob_bytes / cold.image_bytes, 4),
        "skipped_extra_bytes": skipped.layerfill_blob_bytes - skipped.image_bytes,
        "skipped_layer_gets_per_image": round(skipped.layerfill_blob_gets / skipped.pulled_images, 2),
        "manifest_gets_per_pulled_image": round(
            (cold.layerfill_manifest_gets + skipped.layerfill_manifest_gets + index.extra["manifest_gets_of_pulled"])
            / (cold.pulled_images + skipped.pulled_images + index.pulled_images), 2),
        "manifest_gets_per_unpulled_child": round(
            index.extra["manifest_gets_of_unpulled"] / index.extra["unpulled_children"], 2),
        "shared_base_gets": shared.extra["base_gets_by_layerfill"],
        "skipped_to_cached_p50_s": skipped.extra["p50_s"],
    }  # fmt: skip
    return {"layer_mib": layer_mib, "fetchers_in_shared": fetchers, "fetcher_source": pythonpath or "this tree",
            "figures": figures, "targets": TARGETS, "scenarios": [s.full() for s in sc]}  # fmt: skip


def report(result: dict[str, Any]) -> None:
    print(f"\nfetcher source: {result['fetcher_source']}")
    print(f"{'scenario':<48} {'image MiB':>10} {'proxy MiB':>10} {'layerfill MiB':>14} {'lf manifest GETs':>17}")
    for s in result["scenarios"]:
        print(f"{s['name']:<48} {s['image_bytes'] / MiB:>10.1f} {s['proxy_blob_bytes'] / MiB:>10.1f} "
              f"{s['layerfill_blob_bytes'] / MiB:>14.1f} {s['layerfill_manifest_gets']:>17}")  # fmt: skip
    print()
    for k, v in result["figures"].items():
        print(f"  {k:<36} {v!s:>10}   (target {TARGETS.get(k, '-')})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layer-mib", type=int, default=24)
    ap.add_argument("--skips", type=int, default=10, help="repetitions of the skipped-layer scenario (for p50)")
    ap.add_argument("--shared", type=int, default=8, help="images sharing one missing base")
    ap.add_argument("--fetchers", type=int, default=4)
    ap.add_argument("--fetcher-pythonpath", default=None, help="run the fetchers from this source tree")
    ap.add_argument("--name", default="egress", help="results file name under bench/results/")
    ap.add_argument("--data", type=Path, default=None, help="also write the scenarios here (docs/bench-data/...)")
    args = ap.parse_args()
    with common.e2e_lock():
        result = run(ensure_up(), args.layer_mib, args.skips, args.shared, args.fetchers, args.fetcher_pythonpath)
    report(result)
    common.write_result(args.name, result)
    if args.data is not None:
        args.data.parent.mkdir(parents=True, exist_ok=True)
        keep = ("name", "image_bytes", "proxy_blob_bytes", "layerfill_blob_bytes", "layerfill_manifest_gets")
        doc = {"scenarios": [{k: s[k] for k in keep} for s in result["scenarios"]]}
        args.data.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.data}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
