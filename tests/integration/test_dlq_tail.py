"""`dlq list --limit N` on a real Kafka topic: the N newest (matching) dead letters, read from each partition's
tail only. Dead letters are produced with the fetcher's own header format (layerfill.kafka.deadletter)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from layerfill.kafka.deadletter import dlq_headers
from layerfill.ops.deadletters import tail_dead_letters
from tests.support.ops_cli import run_cli
from tests.support.pipeline import Pipeline
from tests.support.stack import DevStack

pytestmark = pytest.mark.integration

PER_PARTITION = 40


def _fill(p: Pipeline) -> None:
    base = int(time.time() * 1000) - 60_000  # recent: retention must not delete them
    prod = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers, "enable.idempotence": True})
    for i in range(PER_PARTITION):
        for part in (0, 1):
            cls = "Rare" if i == 3 else "NoRoute"
            headers = dlq_headers(stage="fetcher", error_class=cls, error_message=f"n{i} p{part}")
            prod.produce(p.topics.dlq.name, value=f"v{i}".encode(), key=b"k", headers=headers, partition=part,
                         timestamp=base + i * 10 + part)  # fmt: skip
    assert prod.flush(30) == 0


def test_limit_reads_only_the_tail(devstack: DevStack, tmp_path: Path) -> None:
    p = Pipeline(devstack, tmp_path / "pipeline")
    try:
        _fill(p)
        dlq = p.topics.dlq.name
        codec = p.codec
        newest, read = tail_dead_letters(p.settings.kafka, dlq, codec, 5)
        assert [(d.partition, d.info["error.message"]) for d in newest] == [
            (1, "n37 p1"), (0, "n38 p0"), (1, "n38 p1"), (0, "n39 p0"), (1, "n39 p1"),
        ]  # fmt: skip
        assert read == 10  # 5 per partition, not the 80 the topic holds
        rare, read = tail_dead_letters(p.settings.kafka, dlq, codec, 5,
                                       matches=lambda d: d.info.get("error.class") == "Rare")  # fmt: skip
        assert [d.info["error.message"] for d in rare] == ["n3 p0", "n3 p1"]
        assert read == 2 * PER_PARTITION  # a filter that matches only old records reads back to the start

        res = run_cli(p, "dlq", "list", "--limit", "3", "--json")
        assert res.returncode == 0, res.stderr
        assert [d["error_message"] for d in json.loads(res.stdout)] == ["n38 p1", "n39 p0", "n39 p1"]
        res = run_cli(p, "dlq", "list", "--limit", "1", "--error-class", "Rare", "-p", "0", "--json")
        assert [d["error_message"] for d in json.loads(res.stdout)] == ["n3 p0"]
    finally:
        p.close()
