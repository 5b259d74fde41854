"""Topic management with the Kafka AdminClient: create what is missing, align what drifted, report changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic, ResourceType

from layerfill.config.settings import KafkaSettings, TopicSpec

Action = Literal["created", "partitions-increased", "config-updated", "unchanged", "error"]


@dataclass
class TopicChange:
    topic: str
    action: Action
    detail: str = ""


def _desired_config(spec: TopicSpec) -> dict[str, str]:
    conf = {"cleanup.policy": spec.cleanup_policy}
    if spec.retention_ms is not None:
        conf["retention.ms"] = str(spec.retention_ms)
    return conf


def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec], timeout: float = 30.0) -> list[TopicChange]:
    """Idempotent: a second run reports every topic unchanged. Partitions only grow (Kafka cannot shrink them,
    and growing would move keys between partitions, so it is reported loudly)."""
    admin = AdminClient(kafka.client_config())
    md = admin.list_topics(timeout=timeout)
    changes: list[TopicChange] = []
    to_create = [s for s in specs if s.name not in md.topics]
    if to_create:
        futures = admin.create_topics(
            [
                NewTopic(
                    s.name,
                    num_partitions=s.partitions,
                    replication_factor=s.replication_factor,
                    config=_desired_config(s),
                )
                for s in to_create
            ],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                changes.append(TopicChange(name, "created", _describe(next(s for s in to_create if s.name == name))))
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == err.TOPIC_ALREADY_EXISTS:  # created concurrently by another instance
                    changes.append(TopicChange(name, "unchanged", "created concurrently"))
                else:
                    changes.append(TopicChange(name, "error", err.str()))
    for spec in specs:
        if spec.name not in md.topics:
            continue
        changes.extend(_align_existing(admin, spec, len(md.topics[spec.name].partitions), timeout))
    return changes


def _align_existing(admin: AdminClient, spec: TopicSpec, partitions: int, timeout: float) -> list[TopicChange]:
    out: list[TopicChange] = []
    if spec.partitions > partitions:
        fut = admin.create_partitions([NewPartitions(spec.name, spec.partitions)], operation_timeout=timeout)[spec.name]
        fut.result()
        out.append(TopicChange(spec.name, "partitions-increased", f"{partitions} -> {spec.partitions} (keys may move)"))
    elif spec.partitions < partitions:
        out.append(TopicChange(spec.name, "unchanged", f"has {partitions} partitions > {spec.partitions}; not shrunk"))
    res = ConfigResource(ResourceType.TOPIC, spec.name)
    current = admin.describe_configs([res])[res].result(timeout=timeout)
    desired = _desired_config(spec)
    drift = {k: v for k, v in desired.items() if k not in current or current[k].value != v}
    if drift:
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in drift.items()]
        admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, spec.name, incremental_configs=entries)])[
            res
        ].result(timeout=timeout)
        out.append(TopicChange(spec.name, "config-updated", ", ".join(f"{k}={v}" for k, v in drift.items())))
    if not out:
        out.append(TopicChange(spec.name, "unchanged", _describe(spec)))
    return out


def _describe(spec: TopicSpec) -> str:
    return f"partitions={spec.partitions} rf={spec.replication_factor} cleanup={spec.cleanup_policy} retention.ms={spec.retention_ms}"


def delete_topics(kafka: KafkaSettings, names: list[str], timeout: float = 30.0) -> None:
    admin = AdminClient(kafka.client_config())
    for fut in admin.delete_topics(names, operation_timeout=timeout).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != exc.args[0].UNKNOWN_TOPIC_OR_PART:
                raise
