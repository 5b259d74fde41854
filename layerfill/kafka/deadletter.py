"""Dead-letter records: the original bytes unchanged, the context in headers (the Kafka Connect DLQ idea)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from layerfill.kafka.producer import OutRecord

PREFIX = "layerfill.dlq."
MAX_MESSAGE = 4000


def dlq_headers(
    *,
    stage: str,
    error_class: str,
    error_message: str,
    original_topic: str | None = None,
    original_partition: int | None = None,
    original_offset: int | None = None,
    consumer_group: str | None = None,
    attempts: int = 1,
    extra: dict[str, str] | None = None,
) -> list[tuple[str, bytes]]:
    h: dict[str, str] = {
        "stage": stage,
        "error.class": error_class,
        "error.message": error_message[:MAX_MESSAGE],
        "attempts": str(attempts),
        "failed.at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    if original_topic is not None:
        h["original.topic"] = original_topic
    if original_partition is not None:
        h["original.partition"] = str(original_partition)
    if original_offset is not None:
        h["original.offset"] = str(original_offset)
    if consumer_group is not None:
        h["consumer.group"] = consumer_group
    h.update(extra or {})
    # backslashreplace: a message may quote input holding a lone surrogate, which strict UTF-8 refuses; the
    # dead letter must still be written (failing here would lose or endlessly retry the event).
    return [(PREFIX + k, v.encode("utf-8", "backslashreplace")) for k, v in h.items()]


def parse_dlq_headers(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, str]:
    out = {}
    for k, v in headers or ():
        if k.startswith(PREFIX):
            out[k[len(PREFIX) :]] = (v or b"").decode(errors="replace")
    return out


def dead_letter(topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> OutRecord:
    return OutRecord(topic=topic, key=key, value=value, headers=headers)
