"""Dead letters (`layerfill dlq`): read them back with their cause, choose some, and send them home.

A dead letter keeps the original key and value unchanged; its `layerfill.dlq.*` headers say where it came
from and why it failed. Replaying produces the same key and value to the original topic, with the
original's own headers (e.g. its retry history) but without the dead-letter ones, plus a header naming
the dead letter it came from."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from layerfill.config.settings import KafkaSettings
from layerfill.kafka.deadletter import PREFIX, parse_dlq_headers
from layerfill.kafka.producer import OutRecord
from layerfill.serde.codec import EventCodec

REPLAYED_FROM = "layerfill.replayed_from"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    info: dict[str, str]  # the layerfill.dlq.* headers, prefix removed
    record: str | None = None  # decoded record name, e.g. ManifestPulled
    event: dict[str, Any] | None = None
    decode_error: str | None = None

    @property
    def original_topic(self) -> str | None:
        return self.info.get("original.topic")

    @property
    def repository(self) -> str | None:
        if self.event and isinstance(self.event.get("repository"), str):
            return self.event["repository"]
        return None

    def summary(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "error_class": self.info.get("error.class"),
            "error_message": self.info.get("error.message"),
            "stage": self.info.get("stage"),
            "original_topic": self.original_topic,
            "original_partition": _int_or_none(self.info.get("original.partition")),
            "original_offset": _int_or_none(self.info.get("original.offset")),
            "consumer_group": self.info.get("consumer.group"),
            "attempts": _int_or_none(self.info.get("attempts")),
            "failed_at": self.info.get("failed.at"),
            "record": self.record,
            "repository": self.repository,
            "digest": (self.event or {}).get("digest"),
            "decode_error": self.decode_error,
        }

    def detail(self) -> dict[str, Any]:
        """The summary plus the decoded event (bytes shown as their length) and every header."""
        event = None
        if self.event is not None:
            event = {k: (f"<{len(v)} bytes>" if isinstance(v, bytes) else v) for k, v in self.event.items()}
        headers = {k: v.decode(errors="replace") for k, v in self.headers}
        return {**self.summary(), "event": event, "headers": headers, "value_bytes": len(self.value)}


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters to act on; every field set must match."""

    partition: int | None = None
    from_offset: int | None = None  # inclusive
    to_offset: int | None = None  # inclusive
    error_class: str | None = None
    original_topic: str | None = None
    repository_prefix: str | None = None
    contains: str | None = None  # substring of the error message

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__slots__)

    def matches(self, d: DeadLetter) -> bool:
        if self.partition is not None and d.partition != self.partition:
            return False
        if self.from_offset is not None and d.offset < self.from_offset:
            return False
        if self.to_offset is not None and d.offset > self.to_offset:
            return False
        if self.error_class is not None and d.info.get("error.class") != self.error_class:
            return False
        if self.original_topic is not None and d.original_topic != self.original_topic:
            return False
        if self.repository_prefix is not None and not (d.repository or "").startswith(self.repository_prefix):
            return False
        return self.contains is None or self.contains in d.info.get("error.message", "")


def decode(codec: EventCodec, topic: str, partition: int, offset: int, timestamp_ms: int, key: bytes | None,
           value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None) -> DeadLetter:  # fmt: skip
    """One consumed record as a DeadLetter; a value the codec cannot read keeps its bytes and the reason."""
    hdrs = tuple((k, v or b"") for k, v in headers or ())
    record = event = error = None
    try:
        record, event = codec.decode(value)
    except Exception as exc:  # any undecodable value is still a dead letter to show and replay
        error = f"{type(exc).__name__}: {exc}"
    return DeadLetter(topic, partition, offset, timestamp_ms, key, value or b"", hdrs, parse_dlq_headers(hdrs),
                      record, event, error)  # fmt: skip


def replay_record(d: DeadLetter) -> OutRecord:
    """The record to produce; ValueError when the dead letter names no original topic (e.g. an invalid
    notification the bridge refused: there is nothing to send it back to)."""
    if not d.original_topic:
        raise ValueError(f"dead letter {d.partition}:{d.offset} names no original topic")
    kept = [(k, v) for k, v in d.headers if not k.startswith(PREFIX) and k != REPLAYED_FROM]
    kept.append((REPLAYED_FROM, f"{d.topic}/{d.partition}/{d.offset}".encode()))
    return OutRecord(d.original_topic, d.key, d.value, kept)


def read_dead_letters(kafka: KafkaSettings, topic: str, codec: EventCodec, *, partition: int | None = None,
                      timeout: float = 30.0) -> Iterator[DeadLetter]:  # fmt: skip
    """Every committed dead letter on `topic` (or one partition), oldest first per partition."""
    c = Consumer({**kafka.client_config(), "group.id": f"layerfill-dlq-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    try:
        md = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise ValueError(f"invalid --topic {topic!r}: no such topic")
        parts = sorted(md.partitions) if partition is None else [partition]
        if partition is not None and partition not in md.partitions:
            raise ValueError(f"invalid --partition {partition}: {topic} has partitions 0..{len(md.partitions) - 1}")
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                starts[p], ends[p] = low, high
        if not ends:
            return
        c.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach the end within {timeout:.0f}s")
            for m in c.consume(500, timeout=0.5):
                if m.error() is not None:
                    continue
                yield decode(codec, topic, m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers())
            # Transaction markers take offsets too: the position, not the last record, says we reached the end.
            for tp in c.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)
    finally:
        c.close()


def windows_back(low: int, high: int, size: int) -> Iterator[tuple[int, int]]:
    """Offset ranges [start, end) from the end of a partition back to `low`, `size` offsets each: how `dlq list
    --limit` reads only the tail it needs."""
    if size < 1:
        raise ValueError(f"invalid --limit {size}: must be >= 1")
    end = high
    while end > low:
        start = max(low, end - size)
        yield start, end
        end = start


def newest(found: Iterable[DeadLetter], limit: int) -> list[DeadLetter]:
    """The `limit` newest dead letters across partitions, oldest first (as `tail` prints)."""
    ordered = sorted(found, key=lambda d: (d.timestamp_ms, d.partition, d.offset))
    return ordered[-limit:] if limit else []


def tail_dead_letters(kafka: KafkaSettings, topic: str, codec: EventCodec, limit: int, *,
                      partition: int | None = None, matches: Callable[[DeadLetter], bool] = lambda _d: True,
                      timeout: float = 30.0) -> tuple[list[DeadLetter], int]:  # fmt: skip
    """The newest `limit` dead letters that `matches`, and how many records were read to find them. Each partition
    is read backwards in windows of `limit` offsets until it gave `limit` matches or reached its start, so a long
    DLQ is not read whole for the last few records."""
    c = Consumer({**kafka.client_config(), "group.id": f"layerfill-dlq-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    read = 0
    found: list[DeadLetter] = []
    try:
        md = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise ValueError(f"invalid --topic {topic!r}: no such topic")
        if partition is not None and partition not in md.partitions:
            raise ValueError(f"invalid --partition {partition}: {topic} has partitions 0..{len(md.partitions) - 1}")
        deadline = time.monotonic() + timeout
        for p in sorted(md.partitions) if partition is None else [partition]:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            mine: list[DeadLetter] = []
            for start, end in windows_back(low, high, limit):
                window = _read_range(c, codec, topic, p, start, end, deadline)
                read += len(window)
                mine = [d for d in window if matches(d)] + mine
                if len(mine) >= limit:
                    break
            found += mine[-limit:]
    finally:
        c.close()
    return newest(found, limit), read


def _read_range(c: Consumer, codec: EventCodec, topic: str, partition: int, start: int, end: int,
                deadline: float) -> list[DeadLetter]:  # fmt: skip
    c.assign([TopicPartition(topic, partition, start)])
    out: list[DeadLetter] = []
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic}[{partition}] {start}..{end} did not finish in time")
        for m in c.consume(500, timeout=0.5):
            if m.error() is not None or m.offset() >= end:
                continue
            out.append(
                decode(codec, topic, m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), m.headers())
            )
        # Transaction markers take offsets too: the position, not the last record, says the window is read.
        (tp,) = c.position([TopicPartition(topic, partition)])
        if tp.offset >= end:
            return out
