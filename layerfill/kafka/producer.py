"""An idempotent producer whose callers learn "accepted" only after Kafka acknowledged the record."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from layerfill.config.settings import KafkaSettings
from layerfill.kafka.observe import observed


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge in time (broker down, unreachable, or rejecting): nothing was accepted."""


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


def producer_config(kafka: KafkaSettings, **extra: object) -> dict[str, object]:
    conf: dict[str, object] = kafka.client_config()
    conf.update(
        {
            "enable.idempotence": True,  # implies acks=all and ordered, de-duplicated retries per partition
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "zstd",
            # Bounded so a caller waiting for an ack gets an answer (then HTTP 5xx) instead of hanging.
            "message.timeout.ms": 30000,
        }
    )
    conf.update(extra)
    return conf


class EventProducer:
    """Thread-safe. A background thread serves delivery callbacks; `send` returns futures, `send_and_wait`
    blocks until every record is acknowledged or raises KafkaUnavailable."""

    def __init__(self, kafka: KafkaSettings, *, role: str = "producer", **extra: object) -> None:
        # Statistics (layerfill_kafka_* metrics of `role`) and log lines are served by the poll thread below.
        self._producer = Producer(observed(producer_config(kafka, **extra), role, kafka.statistics_interval_ms))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def send(self, rec: OutRecord) -> Future[Delivered]:
        fut: Future[Delivered] = Future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                fut.set_exception(KafkaUnavailable(f"Kafka rejected the record for {rec.topic}: {err.str()}"))
            else:
                fut.set_result(Delivered(msg.topic(), msg.partition(), msg.offset()))

        while True:
            try:
                self._producer.produce(
                    rec.topic, value=rec.value, key=rec.key, headers=list(rec.headers), on_delivery=on_delivery
                )
                return fut
            except BufferError:
                # Local queue full: let the poll thread drain it, then try again.
                time.sleep(0.05)

    def send_and_wait(self, records: Sequence[OutRecord], timeout: float = 35.0) -> list[Delivered]:
        futures = [self.send(r) for r in records]
        self._producer.flush(0)  # wake the sender now rather than after linger.ms
        deadline = time.monotonic() + timeout
        out = []
        for fut in futures:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                out.append(fut.result(timeout=remaining))
            except TimeoutError as exc:
                raise KafkaUnavailable(f"Kafka did not acknowledge within {timeout:.0f}s") from exc
        return out

    def flush(self, timeout: float = 30.0) -> int:
        return self._producer.flush(timeout)

    def close(self, timeout: float = 30.0) -> None:
        self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(timeout=2)
