"""Events that try to leave the configured upstreams or the cache's storage keys (issue 9, "Hostile input"):
repositories and digests with path traversal (`..`, `%2e%2e`, absolute paths, NUL, backslash), registries no route
names, events naming another host (straight on Kafka and through the real bridge), and manifests on the real
upstream whose layers or children carry `urls` pointing elsewhere.

A counting socket stands for "elsewhere": it is the upstream of a route the hostile events are aimed at, the host
their URLs and notifications name. It must see no connection at all; storage must hold no key under the hostile
names (nor any key with `..`); every event must end dead-lettered with its cause (or, for foreign layers, complete
with the layer listed as skipped); and a valid image afterwards still completes."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from layerfill.oci import mediatypes as mt
from tests.faults.conftest import full_run
from tests.support.cachestore import CacheStorage
from tests.support.hostile import (
    ConnectionCounter,
    RegistryAPI,
    dead_letters,
    descriptor,
    image_index,
    image_manifest,
    oci_config,
    plant_manifest,
    produce_raw,
    sha256,
    write_results,
)
from tests.support.hostile_inputs import BAD_DIGESTS, TRAVERSALS, expected_for
from tests.support.images import push_random_image
from tests.support.notifications import V1, distribution_event, envelope, harbor_pull
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

HOSTILE_REGISTRY = "hostile.registry.test:5000"
BRIDGE_TRAVERSALS = ["..", "../../etc/passwd", "%2e%2e/x", "/etc/passwd", "a\x00b", "a\\b", "x/../../y"]


def _event(**fields: Any) -> dict[str, Any]:
    base = {"event_id": uuid.uuid4().hex, "occurred_at": datetime.now(UTC), "source": "library",
            "registry": HOSTILE_REGISTRY, "repository": "ok/app", "reference": None,
            "digest": sha256(uuid.uuid4().bytes), "media_type": None, "manifest": None}  # fmt: skip
    base.update(fields)
    return base


def _raw_cases(marker: str, elsewhere: str, devstack: DevStack) -> list[tuple[str, dict[str, Any]]]:
    """(case, ManifestPulled value): each aimed at the route whose upstream is the counting socket, or at a
    registry no route names."""
    cases: list[tuple[str, dict[str, Any]]] = []
    for t in TRAVERSALS:
        cases.append(("repository-traversal", _event(repository=f"{marker}/{t}")))
        cases.append(("repository-traversal", _event(repository=f"{t}/{marker}")))
        if t and not t.isalnum():  # "A" or "a" are plain tags, nothing hostile about them
            cases.append(("reference-traversal", _event(repository=f"{marker}/app", reference=t)))
    for d in BAD_DIGESTS:
        cases.append(("digest-traversal", _event(repository=f"{marker}/app", digest=d)))
    for host in [elsewhere, devstack.upstream_registry, "169.254.169.254", "localhost:15000", "evil.example:443",
                 "registry-1.docker.io", HOSTILE_REGISTRY.upper().replace("TEST", "test2")]:  # fmt: skip
        cases.append(("unknown-registry", _event(registry=host, repository=f"{marker}/app")))
    for host in ["../..", "/etc", "h\x00st:5000", "a\\b", "%2e%2e"]:
        cases.append(("registry-traversal", _event(registry=host, repository=f"{marker}/app")))
    # Aimed at the route whose upstream is the counting socket, only an invalid field may stop an event.
    assert all(expected_for(v) == {"InvalidReference"} for _, v in cases if v["registry"] == HOSTILE_REGISTRY)
    return cases


def _notifications(marker: str, elsewhere: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(case, path, body, headers) for the bridge: traversal in the fields it validates (dead-lettered by the
    bridge), and valid events naming the counting socket as their registry (published; no route for them)."""
    dist = "/v1/notifications/distribution"
    out = []
    for i, t in enumerate(BRIDGE_TRAVERSALS):
        # The marker rides in the notification id too: the bridge's dead letter is the raw event.
        ev = distribution_event(repository=t, host=HOSTILE_REGISTRY, event_id=f"{marker}-r{i}")
        out.append(("bridge-repository-traversal", dist, envelope(ev), {"Content-Type": V1}))
        ev = distribution_event(repository=f"{marker}/app", host=HOSTILE_REGISTRY, event_id=f"{marker}-d{i}")
        ev["target"]["digest"] = "sha256:" + t
        out.append(("bridge-digest-traversal", dist, envelope(ev), {"Content-Type": V1}))
        ev = distribution_event(repository=f"{marker}/app", host=HOSTILE_REGISTRY, tag=t, event_id=f"{marker}-t{i}")
        out.append(("bridge-tag-traversal", dist, envelope(ev), {"Content-Type": V1}))
        hb = harbor_pull(project=marker, name="app", host=HOSTILE_REGISTRY)
        hb["event_data"]["repository"]["repo_full_name"] = f"{marker}/{t}"
        out.append(("bridge-harbor-traversal", "/v1/webhooks/harbor", json.dumps(hb).encode(), {}))
    ev = distribution_event(repository=f"{marker}/foreign-host", host=elsewhere)
    out.append(("bridge-foreign-registry-host", dist, envelope(ev), {"Content-Type": V1}))
    hb = harbor_pull(project=marker, name="foreign-host", host=elsewhere)
    out.append(("bridge-foreign-registry-host", "/v1/webhooks/harbor", json.dumps(hb).encode(), {}))
    return out


def test_hostile_references_send_nothing_elsewhere_and_store_nothing(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("hx")
    marker = unique("hb")  # in every hostile name: storage and outputs are searched for it
    api = RegistryAPI(devstack.upstream_registry)
    with ConnectionCounter() as elsewhere:
        p: Pipeline = pipeline_factory(
            routes=[
                route(devstack, prefix),
                {"registry": HOSTILE_REGISTRY, "upstream_url": elsewhere.url, "sink": "distribution"},
            ]
        )
        p.start("fetcher")
        p.start("bridge")

        # 1. Straight onto the fetcher's input topic: no producer validated these.
        raw = _raw_cases(marker, elsewhere.address, devstack)
        keyed = {f"{marker}-raw-{i}".encode(): (case, value) for i, (case, value) in enumerate(raw)}
        produce_raw(p.settings.kafka, p.topics.manifest_pulled.name,
                    [(k, p.codec.encode("ManifestPulled", v, "x")) for k, (_, v) in keyed.items()])  # fmt: skip

        # 2. Through the real bridge.
        token = devstack.ctx.secrets.bridge_token
        base = f"http://127.0.0.1:{devstack.ctx.ports.bridge}"
        notes = _notifications(marker, elsewhere.address)
        answers: Counter[str] = Counter()
        with requests.Session() as s:
            for case, path, body, headers in notes:
                resp = s.post(base + path, data=body, headers={**headers, "Authorization": f"Bearer {token}"})
                assert resp.status_code == 200, resp.text  # a bad event in a good body: dead-lettered, not a 4xx
                a = resp.json()
                answers[f"{case}: published={a['published']} dead_lettered={a['dead_lettered']}"] += 1

        # 3. Manifests on the real upstream naming other hosts. The registry's API refuses layer `urls` unless
        # configured to allow them, so these are planted in its storage, as an upstream that allows them holds them.
        repo = f"{prefix}/{marker}-foreign"
        config = oci_config(marker)
        layer = uuid.uuid4().bytes * 64
        api.blob(repo, config)
        api.blob(repo, layer)
        away = f"{elsewhere.url}/blobs/{marker}"
        foreign = image_manifest(
            descriptor(mt.OCI_CONFIG, config),
            [
                descriptor(mt.OCI_LAYER_GZIP, layer),
                descriptor(mt.OCI_LAYER_GZIP, sha256(b"nondistributable" + marker.encode()), 4096, urls=[away]),
                descriptor(mt.DOCKER_LAYER_FOREIGN_GZIP, sha256(b"foreign" + marker.encode()), 8192, urls=[away, "file:///etc/passwd"]),
            ],
        )  # fmt: skip
        foreign_digest = plant_manifest(devstack, repo, foreign)
        plain = image_manifest(descriptor(mt.OCI_CONFIG, config), [descriptor(mt.OCI_LAYER_GZIP, layer)])
        api.manifest(repo, plain, mt.OCI_MANIFEST)
        index = image_index([descriptor(mt.OCI_MANIFEST, plain, urls=[away], platform={"os": "linux",
                                                                                       "architecture": "amd64"})])  # fmt: skip
        index_digest = plant_manifest(devstack, repo, index)
        for d in (foreign_digest, index_digest):
            p.publish(registry=devstack.proxy_registry, repository=repo, digest=d)

        # Everything raw and every event the bridge published reaches a terminal record.
        expected_dead = len(keyed) + 1  # + the bridge's distribution event naming the counting socket (published)
        expected_dead += 1  # + the Harbor one

        def fetcher_dead(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if marker.encode() in (r["value"] or b"") or (r["key"] or b"") in keyed]

        dlq = dead_letters(p.read(p.topics.dlq.name, raw=True, timeout=300,
                                  until=lambda rs: len([r for r in fetcher_dead(rs)
                                                        if b"fetcher" in r["headers"].get("layerfill.dlq.stage", b"")])
                                  >= expected_dead))  # fmt: skip
        cached = p.read(p.topics.image_cached.name, timeout=120,
                        until=lambda rs: {foreign_digest, index_digest} <= {r["digest"] for r in rs})  # fmt: skip

        # 4. Still serving a valid image, and not one connection to the host nobody configured.
        good = push_random_image(devstack.upstream_registry, f"{prefix}/after", tmp_path / "good", 64 * 1024)
        p.publish(registry=devstack.proxy_registry, repository=good.repository, digest=good.digest)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == good.digest for r in rs), timeout=120)
        assert elsewhere.connections == 0, elsewhere.first_bytes[:5]
    api.close()

    # Causes: each raw event with the one its fields call for.
    causes: Counter[str] = Counter()
    by_key = {r["key"]: r for r in dlq if r["key"] in keyed}
    assert set(by_key) == set(keyed)
    for key, (case, value) in keyed.items():
        got = by_key[key]["dlq"]
        assert got["stage"] == "fetcher"
        assert got["error.class"] in expected_for(value), (case, value["registry"], value["repository"], got)
        causes[f"{case} -> {got['error.class']}"] += 1
    # The bridge refuses each traversal (4 notifications per string) as an invalid event, naming the field; the two
    # notifications naming the counting socket were published and dead-lettered by the fetcher: NoRoute.
    bridge_dead = [r for r in dlq if r["dlq"]["stage"] == "bridge" and marker.encode() in r["value"]]
    assert len(bridge_dead) == 4 * len(BRIDGE_TRAVERSALS)
    assert all(r["dlq"]["error.class"] == "InvalidEvent" and r["dlq"]["error.message"] for r in bridge_dead)
    foreign_host = [r for r in dlq if r["dlq"]["stage"] == "fetcher" and b"foreign-host" in r["value"]]
    assert len(foreign_host) == 2 and all(r["dlq"]["error.class"] == "NoRoute" for r in foreign_host), foreign_host
    assert all(elsewhere.address in r["dlq"]["error.message"] for r in foreign_host)
    published = sum(n for k, n in answers.items() if "published=1" in k)
    assert published == 2, answers

    # Foreign layers and foreign URLs: the image completes, the layers with `urls` listed as skipped, never fetched.
    (fi,) = [r for r in cached if r["digest"] == foreign_digest]
    skipped = {s["digest"]: s["reason"] for s in fi["skipped"]}
    assert skipped == {sha256(b"nondistributable" + marker.encode()): "foreign_layer",
                       sha256(b"foreign" + marker.encode()): "foreign_layer"}  # fmt: skip
    (ii,) = [r for r in cached if r["digest"] == index_digest]
    assert [m["digest"] for m in ii["manifests"]] == [sha256(plain)]  # the child, from the upstream, by digest

    # Storage: no key under any hostile name, no key with a traversal in it, nothing for the skipped layers.
    storage = CacheStorage(p.settings.s3)
    keys = [o.object_name or "" for o in storage.client.list_objects(storage.bucket, recursive=True)]
    ours = [k for k in keys if marker in k]
    assert all(f"/{prefix}/{marker}-foreign/" in k for k in ours), [k for k in ours if prefix not in k][:5]
    assert not [k for k in keys if ".." in k or "\\" in k or "%2e" in k.lower() or "\x00" in k]
    for d in skipped:
        assert storage.size(d) is None

    path = write_results(
        devstack,
        "hostile-references",
        {"raw_events": len(keyed), "raw_by_case_and_cause": dict(sorted(causes.items())),
         "bridge_notifications": len(notes), "bridge_answers": dict(sorted(answers.items())),
         "bridge_dead_letters": len(bridge_dead), "foreign_url_manifests": 2, "skipped_foreign_layers": len(skipped),
         "connections_to_unnamed_host": 0, "storage_keys_checked": len(keys), "full_run": full_run()},
    )  # fmt: skip
    print(f"{len(keyed)} raw + {len(notes)} bridge hostile references: {dict(causes)} -> {path}")


pytestmark = pytest.mark.e2e
