"""The bridge app wired to the real Publisher and codec, with Kafka replaced by a recorder: tests see exactly
the records the bridge would have produced, and can make Kafka "unavailable"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient

from layerfill.config.settings import BridgeSettings, SchemaRegistrySettings, Settings, TopicSpec, TopicsSettings
from layerfill.kafka.producer import Delivered, KafkaUnavailable, OutRecord
from layerfill.producers.bridge import create_app
from layerfill.producers.publisher import Publisher
from layerfill.serde.codec import EventCodec

TOKEN = "unit-bridge-token"
MAX_BODY = 64 * 1024
DIST = "/v1/notifications/distribution"
HARBOR = "/v1/webhooks/harbor"
# librdkafka's default message.max.bytes: produce() refuses a larger record synchronously.
KAFKA_MAX_MESSAGE = 1_000_000
PULLED_TOPIC = "unit.manifest-pulled"
DLQ_TOPIC = "unit.dlq"


class RecordingProducer:
    """Stands in for EventProducer: acknowledges (or refuses) whole batches and keeps what it acknowledged."""

    def __init__(self) -> None:
        self.sent: list[OutRecord] = []
        self.unavailable = False
        self.closed = 0

    def send_and_wait(self, records: Sequence[OutRecord], timeout: float = 35.0) -> list[Delivered]:
        if self.unavailable:
            raise KafkaUnavailable(f"Kafka did not acknowledge within {timeout:.0f}s")
        for r in records:
            if len(r.value) + len(r.key or b"") + sum(len(k) + len(v) for k, v in r.headers) > KAFKA_MAX_MESSAGE:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        start = len(self.sent)
        self.sent.extend(records)
        return [Delivered(r.topic, 0, start + i) for i, r in enumerate(records)]

    def close(self, timeout: float = 30.0) -> None:
        self.closed += 1

    def on(self, topic: str) -> list[OutRecord]:
        return [r for r in self.sent if r.topic == topic]


def make_settings(token: str | None = TOKEN, max_body: int = MAX_BODY, registry_name: str | None = None) -> Settings:
    return Settings(
        bridge=BridgeSettings(
            token=SecretStr(token) if token else None, max_body_bytes=max_body, registry_name=registry_name
        ),
        topics=TopicsSettings(
            manifest_pulled=TopicSpec(name=PULLED_TOPIC), dlq=TopicSpec(name=DLQ_TOPIC, retention_ms=None)
        ),
        schema_registry=SchemaRegistrySettings(url=None),
    )


def make_app(**kwargs: Any) -> tuple[Starlette, RecordingProducer]:
    producer = RecordingProducer()
    settings = make_settings(**kwargs)
    app = create_app(settings, Publisher(settings, producer=producer, codec=EventCodec()))  # type: ignore[arg-type]
    return app, producer


def make_client(app: Starlette) -> TestClient:
    # raise_server_exceptions: an exception escaping the app fails the test instead of becoming a 500.
    return TestClient(app, raise_server_exceptions=True)


def headers(
    content_type: str = "application/vnd.docker.distribution.events.v2+json", token: str | None = TOKEN
) -> dict:
    h = {"content-type": content_type}
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    return h


def raw_asgi_post(app: Starlette, path: str, raw_headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """POST with headers exactly as given (an HTTP client would normalise them), straight into the ASGI app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 18080),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]
