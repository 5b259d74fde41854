"""A standard Avro console consumer decodes what layerfill writes: Kafka's own kafka-console-consumer with Apicurio's
Avro deserializer (Maven Central jars the devstack installer caches) reads a ManifestPulled that layerfill's codec
wrote with Confluent framing, fetching the writer schema from the devstack's registry by the id in the record."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from layerfill.config.settings import TopicSpec
from layerfill.devstack.install import Installer
from layerfill.devstack.paths import default_paths
from layerfill.kafka.admin import delete_topics, ensure_topics
from layerfill.kafka.producer import EventProducer, OutRecord
from layerfill.serde import events
from layerfill.serde.codec import CONFLUENT
from layerfill.wiring import make_codec
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration


def console_consumer_argv(lib: Path, bootstrap: str, registry_ccompat_url: str, topic: str) -> list[str]:
    """The README's command (section "Schema registry and Avro tooling"), for one record."""
    registry_v3 = registry_ccompat_url.removesuffix("/ccompat/v7") + "/registry/v3"
    java = shutil.which("java") or "java"
    return [
        java, "-cp", f"{lib}/*", "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
        "--property", "print.key=true",
        "--property", "value.deserializer=io.apicurio.registry.serde.avro.AvroKafkaDeserializer",
        "--property", f"value.deserializer.apicurio.registry.url={registry_v3}",
        "--property", "value.deserializer.apicurio.registry.use-id=contentId",
        "--max-messages", "1", "--timeout-ms", "60000",
    ]  # fmt: skip


def test_kafka_console_consumer_decodes_a_layerfill_event(devstack: DevStack) -> None:
    settings = devstack.settings()
    codec = make_codec(settings)
    assert codec.wire_format == CONFLUENT, "the devstack env must turn the schema registry on"
    topic = f"lf-{unique()}.manifest-pulled"
    value = events.manifest_pulled(
        event_id=f"console-{unique()}", source="cli", registry="127.0.0.1:15001", repository="demo/console",
        digest="sha256:" + "c" * 64, reference="1",
    )  # fmt: skip
    ensure_topics(settings.kafka, [TopicSpec(name=topic, partitions=1)])
    producer = EventProducer(settings.kafka)
    try:
        producer.send_and_wait(
            [OutRecord(topic, b"127.0.0.1:15001/demo/console", codec.encode("ManifestPulled", value, topic))]
        )
        lib = Installer(default_paths(), log=lambda _m: None).avro_console()
        argv = console_consumer_argv(lib, settings.kafka.bootstrap_servers, str(settings.schema_registry.url), topic)
        res = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    finally:
        producer.close()
        delete_topics(settings.kafka, [topic])
    assert res.returncode == 0, res.stderr[-3000:]
    line = res.stdout.strip().splitlines()[-1]
    # print.key=true: key, a tab, then the GenericRecord as JSON, decoded by Avro with the registry's schema.
    key, _, record = line.partition("\t")
    assert key == "127.0.0.1:15001/demo/console"
    assert f'"event_id": "{value["event_id"]}"' in record
    assert '"repository": "demo/console"' in record and '"source": "cli"' in record
