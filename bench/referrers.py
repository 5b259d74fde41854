"""What looking for an image's signatures and SBOMs costs: upstream requests (by method) and wall time of one check,
for an image with no artifacts (the overhead every fill now pays), the first check of a signed image with an SBOM,
a later check when nothing changed (HEADs only), and one after a new signature. Real upstream (the devstack's
CNCF distribution), real cosign and oras, the distribution sink into the devstack's S3.

    .venv/bin/python -m bench.referrers [--images 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench.common import remove, run_id, workdir, write_result
from layerfill.consumers.fetcher.referrers import ReferrerSync, SyncResult
from layerfill.oci.referrers import Memory, ReferrerPolicy
from layerfill.remote.client import RegistryClient
from layerfill.sinks.distribution import DistributionSink
from tests.support.images import push_random_image
from tests.support.stack import ensure_up
from tests.support.supplychain import Signer, sbom_document


def _timed(client: RegistryClient, sink: DistributionSink, repo: str, digest: str,
           previous: Memory | None) -> tuple[SyncResult, float]:  # fmt: skip
    start = time.perf_counter()
    result = ReferrerSync(client, sink, repo, repo, ReferrerPolicy(), previous).run([digest])
    assert result.error is None, result.error
    return result, (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args(argv)
    devstack = ensure_up()
    upstream = devstack.upstream_registry
    work = workdir(run_id("referrers"))
    cases: dict[str, list[tuple[SyncResult, float]]] = {"no_artifacts": [], "first": [], "unchanged": [],
                                                        "new_signature": []}  # fmt: skip
    try:
        first_key, second_key = Signer(work / "k1"), Signer(work / "k2")
        with RegistryClient(f"http://{upstream}") as client, DistributionSink(devstack.settings().s3) as sink:
            for i in range(args.images):
                repo = f"{run_id('benchref')}/app"
                bare = push_random_image(upstream, f"{repo}-bare", work / f"bare{i}", 16 * 1024)
                cases["no_artifacts"].append(_timed(client, sink, bare.repository, bare.digest, None))
                image = push_random_image(upstream, repo, work / f"img{i}", 16 * 1024)
                ref = f"{upstream}/{repo}@{image.digest}"
                assert first_key.sign(ref).returncode == 0
                assert first_key.attach_sbom(ref, sbom_document(repo)).returncode == 0
                first = _timed(client, sink, repo, image.digest, None)
                cases["first"].append(first)
                unchanged = _timed(client, sink, repo, image.digest, first[0].memory)
                cases["unchanged"].append(unchanged)
                assert second_key.sign(ref).returncode == 0
                cases["new_signature"].append(_timed(client, sink, repo, image.digest, unchanged[0].memory))
    finally:
        remove(work)
    out: dict[str, Any] = {}
    print(f"{'case':<15} {'HEAD':>5} {'GET':>5} {'ms p50':>8}  (per check, {args.images} images)")
    for name, runs in cases.items():
        heads = statistics.median(r.requests["HEAD"] for r, _ in runs)
        gets = statistics.median(r.requests["GET"] for r, _ in runs)
        ms = statistics.median(t for _, t in runs)
        out[name] = {"head": heads, "get": gets, "ms_p50": round(ms, 1), "ms": [round(t, 1) for _, t in runs]}
        print(f"{name:<15} {heads:>5} {gets:>5} {ms:>8.1f}")
    write_result("referrers", {"images": args.images, "cases": out})


if __name__ == "__main__":
    main()
