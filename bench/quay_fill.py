"""Quay alone vs Quay + layerfill, in one run: seconds from a client's pull through Quay's proxy-cache
organization to each of these being stored in Quay (or "never" within --wait seconds):
  - the skipped layer: B's layer the client already had, so never asked Quay for (and Quay never saw);
  - B's config, which this client did not fetch either;
  - the unpulled platform: the arm64 child of an index whose amd64 child the client pulled (its manifest, config
    and layer).
Each mode gets fresh random images in the upstream (nothing of them is in Quay's shared storage beforehand).
Alone: only Quay's proxycacheblobworker runs. layerfill: `layerfill run quay-logs` (Kafka source) and the fetcher
(registry sink through Quay, the robot's bearer tokens). "Stored" is read from Quay itself: the blob's file in its
LocalStorage and, for the child manifest, its bytes in Quay's `manifest` table.

    .venv/bin/python -m bench.quay_fill [--layer-mib 4 --wait 120]   (needs `layerfill devstack up --with quay`)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from layerfill.remote.client import RegistryClient
from tests.support.pipeline import Pipeline
from tests.support.quay import Quay, quay_or_skip, quay_routes, start_quay_logs
from tests.support.stack import DevStack, ensure_up

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def push(devstack: DevStack, prefix: str, layer_bytes: int, seed: int) -> dict[str, Any]:
    pusher = common.ApiPusher(devstack.upstream_registry)
    try:
        b_repo, m_repo = f"{prefix}/app-b", f"{prefix}/multi"
        skipped = common.random_tar_layer(layer_bytes, seed)
        own = common.random_tar_layer(layer_bytes, seed + 1)
        b = pusher.image(b_repo, "1", [(pusher.blob(b_repo, skipped), len(skipped)),
                                       (pusher.blob(b_repo, own), len(own))], note=b_repo)  # fmt: skip
        children = {}
        for i, arch in enumerate(("amd64", "arm64")):
            data = common.random_tar_layer(layer_bytes, seed + 2 + i)
            children[arch] = pusher.image(
                m_repo, arch, [(pusher.blob(m_repo, data), len(data))], note=f"{m_repo}/{arch}"
            )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": common.OCI_MANIFEST, "digest": img.digest, "size": len(_manifest_bytes(pusher, img)),
             "platform": {"os": "linux", "architecture": arch}} for arch, img in children.items()]},
            sort_keys=True, separators=(",", ":")).encode()  # fmt: skip
        r = pusher.session.put(f"{pusher.base}/v2/{m_repo}/manifests/1", data=index, timeout=60,
                               headers={"Content-Type": OCI_INDEX})  # fmt: skip
        r.raise_for_status()
        return {"b": b, "children": children, "b_repo": b_repo, "m_repo": m_repo}
    finally:
        pusher.close()


def _manifest_bytes(pusher: common.ApiPusher, img: common.PushedImage) -> bytes:
    r = pusher.session.get(f"{pusher.base}/v2/{img.repository}/manifests/{img.digest}",
                           headers={"Accept": common.OCI_MANIFEST}, timeout=60)  # fmt: skip
    r.raise_for_status()
    return r.content


def warm_up(devstack: DevStack, quay: Quay, p: Pipeline, prefix: str, seed: int) -> None:
    """One pull through the whole path first, so group joins and connections are not timed."""
    pusher = common.ApiPusher(devstack.upstream_registry)
    try:
        data = common.random_tar_layer(1024, seed - 7)
        img = pusher.image(f"{prefix}/warm", "1", [(pusher.blob(f"{prefix}/warm", data), len(data))], note=prefix)
    finally:
        pusher.close()
    with RegistryClient(quay.url, quay.admin_creds) as c:
        c.get_manifest(f"{quay.org}/{img.repository}", img.digest)
    p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == img.digest for r in rs), timeout=120)


def manifest_stored(quay: Quay, repository: str, digest: str) -> bool:
    namespace, name = repository.split("/", 1)
    with psycopg.connect(quay.db_url, autocommit=True) as conn:
        row = conn.execute(
            "select length(m.manifest_bytes) from manifest m join repository r on r.id = m.repository_id "
            'join "user" u on u.id = r.namespace_user_id where u.username = %s and r.name = %s and m.digest = %s',
            (namespace, name, digest),
        ).fetchone()
    return bool(row and row[0])


def client_pulls(quay: Quay, org: str, pushed: dict[str, Any]) -> tuple[float, float]:
    """The client: B's manifest and own layer (it has the other layer and the config already); the index, its
    amd64 manifest, config and layer. Returns when B's manifest GET was sent and when Quay answered it."""
    b, amd = pushed["b"], pushed["children"]["amd64"]
    with RegistryClient(quay.url, quay.admin_creds) as c:
        c.ping()  # the client's token, as a client that pulled before has one
        t0 = time.time()
        c.get_manifest(f"{org}/{pushed['b_repo']}", "1")
        t_answer = time.time()
        _read(c, f"{org}/{pushed['b_repo']}", b.layers[1][0])
        m_repo = f"{org}/{pushed['m_repo']}"
        c.get_manifest(m_repo, "1")
        c.get_manifest(m_repo, amd.digest)
        for digest in amd.blobs:
            _read(c, m_repo, digest)
    return t0, t_answer


def _read(c: RegistryClient, repo: str, digest: str) -> None:
    with c.open_blob(repo, digest) as stream:
        for _ in stream:
            pass


def watch(quay: Quay, org: str, pushed: dict[str, Any], t0: float, wait_s: float) -> dict[str, float | None]:
    b, arm = pushed["b"], pushed["children"]["arm64"]
    checks = {
        "skipped layer": lambda: quay.blob_stored(b.layers[0][0]),
        "config": lambda: quay.blob_stored(b.config),
        "unpulled platform": lambda: (
            all(quay.blob_stored(d) for d in arm.blobs)
            and manifest_stored(quay, f"{org}/{pushed['m_repo']}", arm.digest)
        ),
    }
    out: dict[str, float | None] = dict.fromkeys(checks)
    while time.time() - t0 < wait_s and any(v is None for v in out.values()):
        for name, check in checks.items():
            if out[name] is None and check():
                out[name] = round(time.time() - t0, 2)
        time.sleep(0.1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layer-mib", type=int, default=4)
    ap.add_argument("--wait", type=float, default=120.0)
    args = ap.parse_args()
    devstack = ensure_up()
    quay = quay_or_skip(devstack)
    org = quay.org
    results: dict[str, Any] = {}
    seed = int(time.time())
    with common.e2e_lock():
        for mode in ("quay alone", "quay + layerfill"):
            prefix = f"bq{seed % 100000}{'l' if 'layerfill' in mode else 'a'}"
            pushed = push(devstack, prefix, args.layer_mib * 1024 * 1024, seed + (10 if "layerfill" in mode else 0))
            pipeline = None
            if "layerfill" in mode:
                pipeline = Pipeline(
                    devstack, Path(tempfile.mkdtemp(prefix="quay-fill-")), routes=quay_routes(quay, devstack)
                )
                start_quay_logs(pipeline, quay, "kafka")
                pipeline.start("fetcher")
                warm_up(devstack, quay, pipeline, f"{prefix}w", seed)
            topics = None
            if pipeline is not None:
                topics = [pipeline.topics.manifest_pulled.name, pipeline.topics.image_cached.name]
                tw = common.TopicWatch(pipeline.settings.kafka.bootstrap_servers, topics, f"{org}/{prefix}/")
                tw.__enter__()
            try:
                t0, t_answer = client_pulls(quay, org, pushed)
                results[mode] = watch(quay, org, pushed, t0, args.wait)
                results[mode]["Quay answered B's manifest GET"] = round(t_answer - t0, 2)
                if pipeline is not None and topics is not None:
                    # Where the time goes: B's ManifestPulled and ImageCached records (Kafka CreateTime).
                    b_repo = f"{org}/{pushed['b_repo']}"
                    for label, topic in zip(("ManifestPulled of B", "ImageCached of B"), topics, strict=True):
                        seen = tw.find(topic, b_repo)
                        results[mode][label] = round(seen[0].t_record - t0, 2) if seen else None
            finally:
                if pipeline is not None:
                    tw.__exit__()
                    pipeline.close()
            print(mode, results[mode], flush=True)
    print(f"\nseconds from the pull to stored in Quay (None: not within {args.wait:.0f} s)")
    cols = list(results["quay + layerfill"])
    print(f"{'':18}" + "".join(f"{k:>22}" for k in cols))
    for mode, row in results.items():
        print(
            f"{mode:18}" + "".join(f"{('never' if row.get(k, '-') is None else row.get(k, '-'))!s:>22}" for k in cols)
        )
    common.write_result("quay_fill", {"layer_mib": args.layer_mib, "wait_s": args.wait, "results": results})


if __name__ == "__main__":
    main()
