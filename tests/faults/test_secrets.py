"""Secrets never leak (issue 9, "Secrets"): upstream passwords, the bearer tokens they buy, the S3 keys and the
bridge's shared token must not appear in anything a run produces: process logs, /metrics, any record on any
topic (values, keys, headers, dead-letter causes), the state DB, or the bridge's answers.

The run goes through the paths where a secret is most likely to slip into a message: a registry (the fault proxy
in front of the real upstream) that answers 401 until a token bought with Basic credentials is presented; a fill
with the right password; a token revoked mid-run (401, then a new token); an authenticated request that keeps
failing (500, dead letter); a wrong password (401 at the token endpoint, dead letter); a fetcher with a wrong S3
secret key; notifications to the bridge with a wrong token. Every secret is unique and recognisable, and is
searched for raw, base64-encoded as it travels in an Authorization header, and with its HTTP header prefix."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import requests

from tests.support.faultproxy import FaultProxy, Status
from tests.support.hostile import write_results
from tests.support.images import push_random_image
from tests.support.notifications import V1, distribution_event, envelope
from tests.support.pipeline import Pipeline
from tests.support.routes import route
from tests.support.stack import DevStack, unique


def _forms(secret: str, user: str | None = None) -> list[str]:
    """How a secret can appear on the wire or in a dump: raw, as HTTP Basic (base64 of user:secret), as Bearer."""
    out = [secret, f"Bearer {secret}"]
    if user is not None:
        out.append(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return out


def _topic_bytes(p: Pipeline) -> dict[str, bytes]:
    """Every record of every topic of the pipeline (read_committed and not: aborted writes count too)."""
    out = {}
    for _, spec in p.topics:
        records = p.read(spec.name, raw=True)
        blob = b"\n".join(
            (r["key"] or b"") + b"\t" + (r["value"] or b"") + b"\t"
            + b"\t".join(k.encode() + b"=" + (v or b"") for k, v in r["headers"].items())
            for r in records
        )  # fmt: skip
        out[f"topic {spec.name} ({len(records)} records)"] = blob
    return out


def _state_bytes(p: Pipeline) -> dict[str, bytes]:
    db = p.workdir / "state.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    return {f"state db {db}": db.read_bytes(), f"state db dump {db}": dump.encode()}


def _files(p: Pipeline) -> dict[str, bytes]:
    return {f"file {f}": f.read_bytes() for f in sorted(p.workdir.rglob("*")) if f.is_file()}


def test_no_secret_appears_in_logs_metrics_events_or_state(
    devstack: DevStack, pipeline_factory, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:12]
    user = f"lfuser{tag}"
    password = f"pw-upstream-{tag}-secret"
    wrong_password = f"pw-wrong-{tag}-secret"
    wrong_s3_secret = f"s3-wrong-{tag}-secret"
    wrong_bridge_token = f"bridge-wrong-{tag}-token"
    prefix = unique("sx")
    upstream = f"http://{devstack.upstream_registry}"

    good = push_random_image(devstack.upstream_registry, f"{prefix}/ok/one", tmp_path / "one", 96 * 1024)
    after_rotate = push_random_image(devstack.upstream_registry, f"{prefix}/ok/two", tmp_path / "two", 96 * 1024)
    failing = push_random_image(devstack.upstream_registry, f"{prefix}/ok/fails", tmp_path / "fails", 96 * 1024)
    refused = push_random_image(devstack.upstream_registry, f"{prefix}/bad/one", tmp_path / "bad", 96 * 1024)
    s3_image = push_random_image(devstack.upstream_registry, f"{prefix}/s3/one", tmp_path / "s3", 96 * 1024)

    produced: dict[str, bytes] = {}
    with FaultProxy(upstream) as fp:
        auth = fp.require_token(username=user, password=password)
        fp.add(Status(500), digest=failing.layer_digest)  # an authenticated request that never succeeds
        ok_route = route(devstack, f"{prefix}/ok", upstream_url=fp.url) | {"username": user, "password": password}
        bad_route = route(devstack, f"{prefix}/bad", upstream_url=fp.url) | {"username": user,
                                                                             "password": wrong_password}  # fmt: skip
        p: Pipeline = pipeline_factory(routes=[ok_route, bad_route], state="sqlite")  # its bytes are grepped
        p.start("fetcher")
        p.start("bridge")

        # Success with credentials, then a revoked token (401, a new token), then the failure paths.
        p.publish(registry=devstack.proxy_registry, repository=good.repository, digest=good.digest)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == good.digest for r in rs))
        fp.rotate_token()
        p.publish(registry=devstack.proxy_registry, repository=after_rotate.repository, digest=after_rotate.digest)
        p.publish(registry=devstack.proxy_registry, repository=failing.repository, digest=failing.digest)
        p.publish(registry=devstack.proxy_registry, repository=refused.repository, digest=refused.digest)
        p.read(p.topics.image_cached.name, until=lambda rs: any(r["digest"] == after_rotate.digest for r in rs))
        dead = p.read(p.topics.dlq.name, raw=True, timeout=240, until=lambda rs: len(rs) >= 2)
        tokens = list(auth._tokens)  # every token the proxy handed out (none revoked since the rotation)
        tokens += [t for t in [auth.token] if t and t not in tokens]
        assert auth.issued >= 2 and auth.refused >= 1 and auth.challenged >= 2, auth

        # The bridge: the right token, and wrong ones in each header it reads.
        base = f"http://127.0.0.1:{devstack.ctx.ports.bridge}"
        right = devstack.ctx.secrets.bridge_token
        body = envelope(distribution_event(repository=f"{prefix}/via-bridge", host=devstack.proxy_registry))
        answers = []
        with requests.Session() as s:
            for headers in ({"Authorization": f"Bearer {right}"}, {"Authorization": f"Bearer {wrong_bridge_token}"},
                            {"X-Layerfill-Token": wrong_bridge_token}, {"Authorization": wrong_bridge_token}):  # fmt: skip
                resp = s.post(
                    f"{base}/v1/notifications/distribution", data=body, headers={"Content-Type": V1, **headers}
                )
                answers.append(resp.status_code)
                produced[f"bridge answer {resp.status_code}"] = resp.content + str(resp.headers).encode()
            assert answers == [200, 401, 401, 401]
            produced["bridge /metrics"] = s.get(f"{base}/metrics").content
            produced["fetcher /metrics"] = s.get(f"http://127.0.0.1:{p.health_ports['fetcher']}/metrics").content
        p.stop("fetcher")
        p.stop("bridge")

    # A fetcher whose S3 secret key is wrong: storage refuses it, the event is dead-lettered.
    p2: Pipeline = pipeline_factory(routes=[route(devstack, f"{prefix}/s3")],
                                    extra_env={"LAYERFILL_S3__SECRET_KEY": wrong_s3_secret}, state="sqlite")  # fmt: skip
    p2.start("fetcher")
    p2.publish(registry=devstack.proxy_registry, repository=s3_image.repository, digest=s3_image.digest)
    s3_dead = p2.read(p2.topics.dlq.name, raw=True, timeout=240, until=lambda rs: len(rs) >= 1)
    with requests.Session() as s:
        produced["s3-failing fetcher /metrics"] = s.get(
            f"http://127.0.0.1:{p2.health_ports['fetcher']}/metrics"
        ).content
    p2.stop("fetcher")

    causes = {}
    for r in [*dead, *s3_dead]:
        h = {k: (v or b"").decode(errors="replace") for k, v in r["headers"].items()}
        causes[h["layerfill.dlq.error.class"]] = h["layerfill.dlq.error.message"][:300]
    assert "Unauthorized" in causes, causes  # the wrong password
    assert "UpstreamError" in causes, causes  # the authenticated 500s
    assert len(s3_dead) == 1, s3_dead

    for pipe in (p, p2):
        produced |= _files(pipe) | _topic_bytes(pipe) | _state_bytes(pipe)
    secrets = {
        "upstream password": _forms(password, user),
        "wrong upstream password": _forms(wrong_password, user),
        "S3 secret key": _forms(devstack.ctx.secrets.s3_secret_key),
        "wrong S3 secret key": _forms(wrong_s3_secret),
        "bridge token": _forms(right),
        "wrong bridge token": _forms(wrong_bridge_token),
        **{f"bearer token {i}": _forms(t) for i, t in enumerate(tokens)},
    }
    leaks = [
        (what, form, where)
        for what, forms in secrets.items()
        for form in forms
        for where, data in produced.items()
        if form.encode() in data
    ]
    assert not leaks, leaks
    # The search looked at real output: logs, events and the state DB naming this run's repositories, metrics.
    for kind in ("file ", "topic ", "state db "):
        assert any(prefix.encode() in v for k, v in produced.items() if k.startswith(kind)), kind
    assert any(b"fetcher_" in v or b"layerfill" in v for k, v in produced.items() if "metrics" in k)

    summary: dict[str, Any] = {
        "secrets": len(secrets), "forms_searched": sum(len(f) for f in secrets.values()),
        "sources": len(produced), "bytes_searched": sum(len(v) for v in produced.values()),
        "tokens_issued": auth.issued, "token_requests_refused": auth.refused, "challenges_401": auth.challenged,
        "dead_letter_causes": causes, "bridge_answers": answers, "leaks": len(leaks),
    }  # fmt: skip
    path = write_results(devstack, "secrets", summary)
    print(summary, path)
