"""Generated hostile input against the real services (issue 9, "Hostile input"): thousands of webhook requests
POSTed over HTTP to a real bridge process, and thousands of raw and Avro records produced to a real fetcher's
input topic. Every request is answered with the status its kind calls for and a reason, never a 5xx; every record
is dead-lettered with its cause and counted; afterwards both still serve a valid input end to end.

Counts: CI runs `scaled(ci, full)` examples (webhooks + records >= 10,000); LAYERFILL_FAULTS_FULL=1 runs more.
The numbers of each run go to .devstack/faults-results/hostile-*.json (for docs/reliability.md)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from layerfill.producers import distribution, harbor
from layerfill.producers.auth import authorized
from layerfill.producers.pull_event import MalformedBody
from tests.faults.conftest import full_run, scaled
from tests.support.cachestore import CacheStorage
from tests.support.hostile import ConnectionCounter, dead_letters, produce_raw, write_results
from tests.support.hostile_inputs import (
    DIST,
    HARBOR,
    WebhookRequest,
    kafka_records,
    send_raw,
    webhook_requests,
)
from tests.support.images import push_random_image
from tests.support.notifications import V1, distribution_event, envelope
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique

WEBHOOKS = scaled(6_000, 30_000)
RECORDS = scaled(4_000, 20_000)
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, print_blob=True)
PARSERS = {DIST: distribution.parse_envelope, HARBOR: harbor.parse_webhook}


def _full_log(p: Pipeline, name: str) -> str:
    return (p.workdir / f"{name}.log").read_text(errors="replace")


def _expected(req: WebhookRequest, token: str, max_body: int) -> tuple[int, str | None, Any]:
    """(status, the exact 400 reason when the parser gives one, the parse result when accepted)."""
    if req.path not in PARSERS:
        return 404, None, None
    if req.method != "POST":
        return 405, None, None
    if not authorized({k.lower(): v for k, v in req.headers.items()}, token):
        return 401, None, None
    ctype = req.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if req.path == DIST and ctype not in distribution.ENVELOPE_TYPES:
        return 415, None, None
    if len(req.body) > max_body:
        return 413, None, None
    try:
        parsed = PARSERS[req.path](req.body, None)
    except MalformedBody as exc:
        return 400, str(exc), None
    return 200, None, parsed


@pytest.mark.timeout(1800)
def test_generated_webhooks_over_http_never_5xx_and_the_bridge_still_publishes(
    devstack: DevStack, pipeline_factory
) -> None:
    p: Pipeline = pipeline_factory()
    p.start("bridge")
    base = f"http://127.0.0.1:{devstack.ctx.ports.bridge}"
    token = devstack.ctx.secrets.bridge_token
    max_body = p.settings.bridge.max_body_bytes
    outcomes: Counter[str] = Counter()
    published = dead_lettered = 0
    session = requests.Session()  # keep-alive: thousands of requests over a handful of connections
    started = time.monotonic()

    @settings(FUZZ, max_examples=WEBHOOKS)
    @given(req=webhook_requests(token, max_body))
    def post(req: WebhookRequest) -> None:
        nonlocal published, dead_lettered
        status, reason, parsed = _expected(req, token, max_body)
        if req.raw:
            got, body = send_raw("127.0.0.1", devstack.ctx.ports.bridge, req)
            assert got == status, req.describe()
            assert json.loads(body)["error"], req.describe()
            outcomes[f"{req.kind} -> {got}"] += 1
            return
        resp = session.request(req.method, base + req.path, data=req.body, headers=req.headers, timeout=60)
        outcomes[f"{req.kind} -> {resp.status_code}"] += 1
        assert resp.status_code < 500, f"{resp.status_code} {resp.text[:300]} for {req.describe()}"
        assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]} for {req.describe()}"
        if status >= 400 and status != 405 and status != 404:
            error = resp.json()["error"]
            assert error, req.describe()
            assert not error.startswith("unparseable body"), f"parser crashed: {error} for {req.describe()}"
        if reason is not None and req.kind == "deep-nesting":
            # Where the nesting becomes too deep depends on the interpreter's stack: the reason's wording may differ.
            assert resp.json()["error"].startswith("body is not valid JSON"), req.describe()
        elif reason is not None:
            assert resp.json()["error"] == reason
        if status == 200:
            answer = resp.json()
            assert answer["published"] == len(parsed.events), req.describe()
            assert answer["dead_lettered"] == len(parsed.invalid), req.describe()
            assert answer["ignored"] == parsed.ignored
            published += answer["published"]
            dead_lettered += answer["dead_lettered"]

    post()
    elapsed = time.monotonic() - started

    # Still serving: healthy, alive, and a valid notification afterwards reaches Kafka.
    assert session.get(f"{base}/healthz", timeout=10).status_code == 200
    assert p.procs["bridge"].poll() is None
    repo = f"{unique('hi')}/after/fuzz"
    body = envelope(distribution_event(repository=repo, host=devstack.proxy_registry))
    resp = session.post(f"{base}{DIST}", data=body, headers={"Content-Type": V1, "Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.json()["published"] == 1, resp.text
    (after,) = [
        r for r in p.read(p.topics.manifest_pulled.name, until=lambda rs: any(r["repository"] == repo for r in rs))
        if r["repository"] == repo
    ]  # fmt: skip
    assert after["registry"] == devstack.proxy_registry
    metrics = session.get(f"{base}/metrics", timeout=10).text
    log = _full_log(p, "bridge")
    assert "Traceback" not in log, log[-5000:]
    session.close()

    total = sum(outcomes.values())
    assert total >= WEBHOOKS * 0.9  # hypothesis may stop a little short of max_examples, never far
    statuses = Counter(k.rsplit(" -> ", 1)[1] for k in outcomes.elements())
    assert not [s for s in statuses if s.startswith("5")]
    path = write_results(
        devstack,
        "hostile-webhooks",
        {"requests": total, "by_status": dict(statuses), "by_kind_and_status": dict(sorted(outcomes.items())),
         "events_published": published, "events_dead_lettered_by_bridge": dead_lettered,
         "seconds": round(elapsed, 1), "full_run": full_run(), "bridge_metrics_lines": len(metrics.splitlines())},
    )  # fmt: skip
    print(f"{total} webhook requests in {elapsed:.0f}s: {dict(statuses)} -> {path}")


@pytest.mark.timeout(1800)
def test_generated_records_are_dead_lettered_with_their_cause_and_the_fetcher_still_fills(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    prefix = unique("hr")
    marker = unique("hm")  # in every repository the hostile records name: storage is searched for it afterwards
    fuzz_registry = "fuzz.registry.test:5000"
    with ConnectionCounter() as elsewhere:
        p: Pipeline = pipeline_factory(
            routes=[
                route(devstack, prefix),
                # A route whose upstream is the counting socket: only invalid fields stop these records.
                {"registry": fuzz_registry, "upstream_url": elsewhere.url, "sink": "distribution"},
            ]
        )
        topic = p.topics.manifest_pulled.name
        unknown_hosts = [elsewhere.address, devstack.upstream_registry, "evil.example:443", "registry-1.docker.io"]
        records: list[tuple[bytes, Any]] = []
        routable: set[tuple[str, str, str]] = set()

        @settings(FUZZ, max_examples=RECORDS + RECORDS // 4)
        @given(rec=kafka_records(p.codec, topic, fuzz_registry, unknown_hosts, marker))
        def generate(rec: Any) -> None:
            if len(records) >= RECORDS:
                return
            if rec.expected == frozenset({"NoRoute"}):
                # Valid events for one image in one batch are one fill (duplicate_in_batch): one dead letter for
                # the image, not one per copy. Only distinct images here, so that every record has its own.
                _, ev = p.codec.decode(rec.value)
                if (ev["registry"], ev["repository"], ev["digest"]) in routable:
                    return
                routable.add((ev["registry"], ev["repository"], ev["digest"]))
            records.append((f"{marker}-{len(records)}".encode(), rec))

        generate()
        assert len(records) == RECORDS
        by_key = {key: rec for key, rec in records}
        p.start("fetcher")
        started = time.monotonic()
        produce_raw(p.settings.kafka, topic, [(key, rec.value) for key, rec in records])

        def ours(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [r for r in rs if (r["key"] or b"").startswith(marker.encode())]

        dlq = dead_letters(
            ours(p.read(p.topics.dlq.name, raw=True, timeout=900, until=lambda rs: len(ours(rs)) >= len(records)))
        )
        drained = time.monotonic() - started

        # Each exactly once, unchanged, with the cause its kind calls for.
        assert sorted(r["key"] for r in dlq) == sorted(by_key)
        wrong = []
        causes: Counter[str] = Counter()
        for r in dlq:
            rec = by_key[r["key"]]
            assert r["value"] == rec.value
            causes[f"{rec.kind} -> {r['dlq']['error.class']}"] += 1
            if r["dlq"]["error.class"] not in rec.expected or not r["dlq"]["error.message"]:
                wrong.append((rec.kind, sorted(rec.expected), r["dlq"]))
        assert not wrong, wrong[:5]
        assert p.read(p.topics.image_cached.name) == []
        assert p.read(p.topics.retry.name) == []  # permanent causes: dead-lettered at once, never retried

        # Still serving: a valid event afterwards completes.
        good = push_random_image(devstack.upstream_registry, f"{prefix}/after", tmp_path / "good", 64 * 1024)
        p.publish(registry=devstack.proxy_registry, repository=good.repository, digest=good.digest)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == good.digest for r in rs), timeout=120)
        assert p.procs["fetcher"].poll() is None
        # No request left for any of them, and nothing reached storage under their names.
        assert elsewhere.connections == 0, elsewhere.first_bytes[:3]
    storage = CacheStorage(p.settings.s3)
    keys = [o.object_name or "" for o in storage.client.list_objects(storage.bucket, recursive=True)]
    assert not [k for k in keys if marker in k or ".." in k or "\\" in k or "%2e" in k.lower()]
    log = _full_log(p, "fetcher")
    assert "Traceback" not in log, log[-5000:]

    kinds = Counter(rec.kind for rec in by_key.values())
    path = write_results(
        devstack,
        "hostile-records",
        {"records": len(records), "by_kind": dict(kinds), "dead_lettered": len(dlq),
         "by_kind_and_cause": dict(sorted(causes.items())), "connections_to_unnamed_host": elsewhere.connections,
         "storage_keys_checked": len(keys), "seconds_to_drain": round(drained, 1), "full_run": full_run()},
    )  # fmt: skip
    print(f"{len(records)} hostile records dead-lettered in {drained:.0f}s: {dict(causes)} -> {path}")
