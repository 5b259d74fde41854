"""The two records a consumer stage writes for an event it could not finish: the same bytes again on its retry
topic (due later), or on the dead-letter topic with the context in headers."""

from __future__ import annotations

from confluent_kafka import Message

from layerfill.kafka.deadletter import PREFIX, dlq_headers
from layerfill.kafka.producer import OutRecord
from layerfill.kafka.retry import RetryInfo, retry_headers


def retry_record(m: Message, retry_topic: str, step: RetryInfo, error: str) -> OutRecord:
    """`m` unchanged on the retry topic, due at `step.due_ms`; its other headers are carried over."""
    return OutRecord(retry_topic, m.key(), m.value() or b"", retry_headers(step, error, m.headers()))


def dead_letter_record(
    m: Message,
    dlq_topic: str,
    *,
    stage: str,
    consumer_group: str,
    error_class: str,
    error_message: str,
    attempts: int,
) -> OutRecord:
    """`m` unchanged on the dead-letter topic. Its own headers (e.g. the retry count) stay, so a replayed dead
    letter keeps its history; dead-letter headers of an earlier round are replaced."""
    headers = dlq_headers(
        stage=stage,
        error_class=error_class,
        error_message=error_message,
        original_topic=m.topic(),
        original_partition=m.partition(),
        original_offset=m.offset(),
        consumer_group=consumer_group,
        attempts=attempts,
    )
    carried = [(k, v or b"") for k, v in (m.headers() or []) if not k.startswith(PREFIX)]
    return OutRecord(dlq_topic, m.key(), m.value() or b"", [*carried, *headers])
