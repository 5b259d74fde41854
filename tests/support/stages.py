"""Driving a consumer stage without the transactional loop: its jobs for a list of records, waited for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from layerfill.kafka.txloop import Outcome


def processed(stage: Any, msgs: Sequence[Message]) -> list[Outcome]:
    """`stage.process(msgs)` with the pool's futures resolved: one outcome per record, in order."""
    return [j if isinstance(j, Outcome) else j.result() for j in stage.process(msgs)]
