"""Acceptance (issue 3): the library API and `layerfill publish` each put one ManifestPulled on Kafka (read back
and decoded), and invalid input gets a clear error naming the field (ValueError; CLI exit code 2) with nothing
published. Uses its own topics and no bridge."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layerfill.oci import mediatypes
from layerfill.producers.publisher import Publisher
from tests.support.notifications import fake_digest
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(devstack: DevStack, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(devstack, tmp_path / "pipeline")
    try:
        yield p
    finally:
        p.close()


def _cli(p: Pipeline, *args: str) -> subprocess.CompletedProcess:
    env = p.env("cli")
    assert env["LAYERFILL_TOPICS__MANIFEST_PULLED__NAME"] == p.topics.manifest_pulled.name
    return subprocess.run(
        [sys.executable, "-m", "layerfill.cli.main", "publish", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _mine(p: Pipeline, prefix: str, n: int) -> list[dict]:
    topic = p.topics.manifest_pulled.name
    records = p.read(topic, until=lambda rs: len([r for r in rs if r["repository"].startswith(prefix)]) >= n)
    return [r for r in records if r["repository"].startswith(prefix)]


def test_library_api_publishes_one_event(pipeline: Pipeline) -> None:
    prefix = unique("lib")
    digest = fake_digest(prefix)
    pub = Publisher(pipeline.settings)
    try:
        delivered = pub.publish_manifest_pulled(
            registry="quay.example:8443", repository=f"{prefix}/app", digest=digest, reference="v1",
            media_type=mediatypes.OCI_MANIFEST, source="quay",
        )  # fmt: skip
        for bad, field in (
            ({"repository": f"{prefix}/Bad"}, "invalid repository"),
            ({"digest": "sha256:00"}, "invalid digest"),
            ({"reference": "tag with space"}, "invalid reference"),
            ({"registry": "no/slashes"}, "invalid registry"),
            ({"media_type": "application/json"}, "invalid media_type"),
        ):
            kwargs = {"registry": "quay.example:8443", "repository": f"{prefix}/app", "digest": digest} | bad
            with pytest.raises(ValueError, match=field):
                pub.publish_manifest_pulled(**kwargs)
    finally:
        pub.close()
    assert delivered.topic == pipeline.topics.manifest_pulled.name

    raw = pipeline.read(pipeline.topics.manifest_pulled.name, raw=True)
    assert [(r["partition"], r["offset"]) for r in raw] == [(delivered.partition, delivered.offset)]
    assert raw[0]["key"] == f"quay.example:8443/{prefix}/app".encode()
    (ev,) = pipeline.read(pipeline.topics.manifest_pulled.name)
    assert (ev["registry"], ev["repository"], ev["reference"], ev["digest"], ev["source"]) == (
        "quay.example:8443",
        f"{prefix}/app",
        "v1",
        digest,
        "quay",
    )


def test_cli_publishes_one_event_by_digest_and_by_tag(pipeline: Pipeline) -> None:
    prefix = unique("cli")
    digest = fake_digest(prefix)
    registry = pipeline.devstack.proxy_registry
    by_digest = _cli(pipeline, f"{registry}/{prefix}/app@{digest}")
    assert by_digest.returncode == 0, by_digest.stderr
    assert f"published to {pipeline.topics.manifest_pulled.name}" in by_digest.stdout
    by_tag = _cli(pipeline, f"{registry}/{prefix}/app:1.0", "--digest", digest, "--media-type", mediatypes.OCI_INDEX)
    assert by_tag.returncode == 0, by_tag.stderr

    events = _mine(pipeline, prefix, 2)  # one key, so one partition: in publish order
    assert [(e["registry"], e["repository"], e["reference"], e["digest"], e["source"]) for e in events] == [
        (registry, f"{prefix}/app", None, digest, "cli"),
        (registry, f"{prefix}/app", "1.0", digest, "cli"),
    ]
    assert [e["media_type"] for e in events] == [None, mediatypes.OCI_INDEX]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{reg}/{prefix}/app@sha256:1234"], "invalid digest 'sha256:1234'"),
        (["{reg}/{prefix}/App@{digest}"], "invalid repository '{prefix}/App'"),
        (["{reg}/{prefix}/app:-bad", "--digest", "{digest}"], "invalid reference '-bad': must match [a-zA-Z0-9_]"),
        (["{reg}/{prefix}/app:1"], "invalid digest: IMAGE names a tag, so --digest is required"),
        (["{reg}/{prefix}/app"], "no @DIGEST or :TAG"),
        (["no-slash@{digest}"], "invalid image 'no-slash@"),
        (["bad host/{prefix}/app@{digest}"], "invalid registry 'bad host'"),
        (["{reg}/{prefix}/app@{digest}", "--media-type", "text/plain"], "invalid media_type 'text/plain'"),
        (["{reg}/{prefix}/app@{digest}", "--source", "nope"], "source must be one of"),
    ],
)
def test_cli_invalid_input_exits_2_naming_the_field(pipeline: Pipeline, args: list[str], message: str) -> None:
    prefix = unique("clibad")
    values = {"reg": pipeline.devstack.proxy_registry, "prefix": prefix, "digest": fake_digest(prefix)}
    res = _cli(pipeline, *(a.format(**values) for a in args))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message.format(**values) in res.stderr
    assert "\n" not in res.stderr.strip(), "one message, one line"
    assert res.stdout == ""
    assert pipeline.read(pipeline.topics.manifest_pulled.name) == []
