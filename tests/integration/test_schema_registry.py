"""Confluent wire format through the real schema registry of the devstack (Apicurio's Confluent-compatible API)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from typer.testing import CliRunner

from layerfill.cli.main import app
from layerfill.config.settings import TopicsSettings
from layerfill.kafka.admin import delete_topics
from layerfill.serde import events
from layerfill.serde.catalog import SchemaCatalog
from layerfill.serde.codec import CONFLUENT, EventCodec
from layerfill.serde.confluent import HEADER_SIZE, read_header
from layerfill.serde.subjects import COMPATIBILITY, event_subjects
from layerfill.wiring import make_codec
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration


def _registry_url(devstack: DevStack) -> str:
    svc = devstack.stack.schema_registry
    if not svc.healthy():
        pytest.fail(f"schema registry at {svc.endpoint} is not healthy: run `layerfill devstack up`")
    return svc.endpoint


def test_confluent_round_trip_through_apicurio(devstack: DevStack) -> None:
    url = _registry_url(devstack)
    topic = f"lf-{unique()}.manifest-pulled"
    writer = EventCodec(url)
    assert writer.wire_format == CONFLUENT
    value = events.manifest_pulled(
        event_id="e1", source="cli", registry="127.0.0.1:15001", repository="demo/app", digest="sha256:" + "a" * 64,
        reference="1",
    )  # fmt: skip
    data = writer.encode("ManifestPulled", value, topic)
    schema_id = read_header(data)
    assert schema_id >= 0 and len(data) > HEADER_SIZE
    # A fresh reader knows nothing but the registry: it must look the writer schema up by id.
    record, decoded = EventCodec(url).decode(data)
    assert record == "ManifestPulled"
    assert decoded["repository"] == "demo/app" and decoded["digest"] == value["digest"]
    # The same schema on the same subject keeps its id; single-object readers still work alongside.
    assert read_header(writer.encode("ManifestPulled", value, topic)) == schema_id
    assert EventCodec().decode(EventCodec().encode("ManifestPulled", value, topic))[1]["event_id"] == "e1"


def test_the_devstack_env_turns_the_registry_on(devstack: DevStack) -> None:
    url = _registry_url(devstack)
    settings = devstack.settings()
    assert settings.schema_registry.url == url
    codec = make_codec(settings)
    assert codec.wire_format == CONFLUENT
    value = events.manifest_pulled(
        event_id="e2", source="cli", registry="127.0.0.1:15001", repository="demo/app", digest="sha256:" + "b" * 64,
        reference="1",
    )  # fmt: skip
    assert codec.encode("ManifestPulled", value, f"lf-{unique()}.manifest-pulled")[:1] == b"\x00"


def test_topics_ensure_sets_backward_transitive_on_each_subject(devstack: DevStack) -> None:
    url = _registry_url(devstack)
    devstack.settings()  # points LAYERFILL_ENV_FILE at the devstack's env
    prefix = f"lf-{unique()}"
    env = {
        f"LAYERFILL_TOPICS__{field.upper()}__NAME": f"{prefix}.{spec.name.removeprefix('layerfill.')}"
        for field, spec in TopicsSettings()
    }
    client = SchemaRegistryClient({"url": url})
    subjects = [s for s, _ in event_subjects(_topics(env))]
    try:
        first = CliRunner().invoke(app, ["topics", "ensure", "--json"], env=env)
        assert first.exit_code == 0, first.output
        report = json.loads(first.output)
        assert {c["action"] for c in report["topics"]} == {"created"}
        assert [s["subject"] for s in report["subjects"]] == subjects
        assert {s["action"] for s in report["subjects"]} == {"config-updated"}, report["subjects"]
        for subject in subjects:
            assert client.get_compatibility(subject) == COMPATIBILITY
        again = json.loads(CliRunner().invoke(app, ["topics", "ensure", "--json"], env=env).output)
        assert {s["action"] for s in again["subjects"]} == {"unchanged"}
        # The registry now enforces it: once a producer registered ManifestPulled, a version that cannot read
        # it is refused.
        current = SchemaCatalog().current_json("ManifestPulled")
        client.register_schema(subjects[0], Schema(current, "AVRO"))
        breaking = json.loads(current)
        breaking["fields"].append({"name": "region", "type": "string", "doc": "no default: breaks old data"})
        with pytest.raises(SchemaRegistryError) as refused:
            client.register_schema(subjects[0], Schema(json.dumps(breaking), "AVRO"))
        assert refused.value.http_status_code == 409
    finally:
        delete_topics(devstack.settings().kafka, list(env.values()))


def _topics(env: dict[str, str]) -> TopicsSettings:
    topics = TopicsSettings()
    for field, spec in topics:
        spec.name = env[f"LAYERFILL_TOPICS__{field.upper()}__NAME"]
    return topics
