"""Confluent wire format through the real schema registry of the devstack (Apicurio's Confluent-compatible API)."""

from __future__ import annotations

import pytest

from layerfill.serde import events
from layerfill.serde.codec import CONFLUENT, EventCodec
from layerfill.serde.confluent import HEADER_SIZE, read_header
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
