"""Moving a consumer group's committed offsets (`layerfill replay`): the pure plan, and the Kafka calls.

The plan clamps every target into the partition's [low, high] watermarks, so a replay never points a
group past the end or before what retention kept."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Literal

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.error import KafkaError

from layerfill.config.settings import KafkaSettings

Target = Literal["timestamp", "offset", "earliest", "latest"]


@dataclass(frozen=True, slots=True)
class PartitionMove:
    partition: int
    current: int | None  # committed offset, None when the group never committed one
    target: int
    low: int
    high: int

    @property
    def delta(self) -> int | None:
        """Records the group will read again (negative: records it will skip)."""
        return None if self.current is None else self.current - self.target

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "delta": self.delta}


class GroupActive(RuntimeError):
    def __init__(self, group: str, members: int) -> None:
        super().__init__(f"consumer group {group!r} has {members} active member(s): stop its consumers first")
        self.group = group
        self.members = members


def plan_moves(
    partitions: list[int],
    committed: dict[int, int | None],
    watermarks: dict[int, tuple[int, int]],
    kind: Target,
    *,
    offset: int | None = None,
    by_time: dict[int, int] | None = None,
) -> list[PartitionMove]:
    """Per partition from -> to. `by_time` holds offsets_for_times answers (-1: no record at or after the time)."""
    moves = []
    for p in sorted(partitions):
        low, high = watermarks[p]
        if kind == "earliest":
            target = low
        elif kind == "latest":
            target = high
        elif kind == "offset":
            if offset is None:
                raise ValueError("invalid offset: required for an offset target")
            target = offset
        else:
            found = (by_time or {}).get(p, -1)
            target = high if found < 0 else found
        moves.append(PartitionMove(p, committed.get(p), min(max(target, low), high), low, high))
    return moves


class OffsetAdmin:
    """The Kafka side of a replay. One instance per command."""

    def __init__(self, kafka: KafkaSettings, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._admin = AdminClient(kafka.client_config())
        # A consumer only for metadata, watermarks and offsets_for_times: it never subscribes or commits.
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": f"layerfill-replay-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str) -> list[int]:
        md = self._consumer.list_topics(topic, timeout=self.timeout).topics.get(topic)
        if md is None or md.error is not None:
            raise ValueError(f"invalid --topic {topic!r}: no such topic")
        return sorted(md.partitions)

    def active_members(self, group: str) -> int:
        result = self._admin.describe_consumer_groups([group], request_timeout=self.timeout)[group].result()
        return len(result.members or [])

    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {
            p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout) for p in partitions
        }

    def committed(self, group: str, topic: str, partitions: list[int]) -> dict[int, int | None]:
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
        res = self._admin.list_consumer_group_offsets([req], request_timeout=self.timeout)[group].result()
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in res.topic_partitions}

    def offsets_for_time(self, topic: str, partitions: list[int], timestamp_ms: int) -> dict[int, int]:
        found = self._consumer.offsets_for_times(
            [TopicPartition(topic, p, timestamp_ms) for p in partitions], timeout=self.timeout
        )
        return {tp.partition: tp.offset for tp in found}

    def apply(self, group: str, topic: str, moves: list[PartitionMove]) -> None:
        """Commit the targets for `group`, refusing if it gained members since the plan was made."""
        members = self.active_members(group)
        if members:
            raise GroupActive(group, members)
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, m.partition, m.target) for m in moves])
        res = self._admin.alter_consumer_group_offsets([req], request_timeout=self.timeout)[group].result()
        failed = [tp for tp in res.topic_partitions if tp.error is not None]
        if failed:
            raise KafkaException(KafkaError(KafkaError._FAIL, f"offsets not altered: {failed}"))


def plan_replay(
    admin: OffsetAdmin,
    group: str,
    topic: str,
    kind: Target,
    *,
    partitions: list[int] | None = None,
    offset: int | None = None,
    timestamp_ms: int | None = None,
) -> list[PartitionMove]:
    """Read everything the plan needs; raises GroupActive, or ValueError naming a bad --partition/--topic."""
    available = admin.partitions(topic)
    chosen = sorted(set(partitions)) if partitions else available
    bad = [p for p in chosen if p not in available]
    if bad:
        raise ValueError(f"invalid --partition {bad}: {topic} has partitions 0..{len(available) - 1}")
    members = admin.active_members(group)
    if members:
        raise GroupActive(group, members)
    by_time = (
        admin.offsets_for_time(topic, chosen, timestamp_ms)
        if kind == "timestamp" and timestamp_ms is not None
        else None
    )
    return plan_moves(
        chosen,
        admin.committed(group, topic, chosen),
        admin.watermarks(topic, chosen),
        kind,
        offset=offset,
        by_time=by_time,
    )
