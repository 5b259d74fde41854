"""Run layerfill's own processes (bridge, fetcher, scanner) as real subprocesses against the devstack, each
test with its own topics, consumer groups and state DB, and read what they emit back from Kafka."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition

from layerfill.config.settings import TopicSpec, TopicsSettings
from layerfill.kafka.admin import delete_topics, ensure_topics
from layerfill.wiring import make_codec
from tests.support.stack import DevStack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _topics(prefix: str, partitions: int) -> TopicsSettings:
    def spec(name: str) -> TopicSpec:
        return TopicSpec(name=f"{prefix}.{name}", partitions=partitions)

    return TopicsSettings(
        manifest_pulled=spec("manifest-pulled"),
        layer_cached=spec("layer-cached"),
        image_cached=spec("image-cached"),
        image_scanned=spec("image-scanned"),
        retry=spec("manifest-pulled.retry"),
        image_cached_retry=spec("image-cached.retry"),
        dlq=spec("dlq"),
    )


def _postgres_schema(devstack: DevStack, name: str, *, drop: bool = False) -> str:
    """A schema of its own in the devstack's PostgreSQL database `layerfill` (the one its env file pins the
    state DB to), created (or dropped), and the state URL that selects it through the search path."""
    import psycopg

    from layerfill.state import parse_url

    base = parse_url(devstack.stack.postgres.url("layerfill"))
    with psycopg.connect(host=base.host, port=base.port, user=base.username, dbname=base.database,
                         autocommit=True, connect_timeout=10) as conn:  # fmt: skip
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE' if drop else f'CREATE SCHEMA "{name}"')
    return base.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)


class Pipeline:
    def __init__(self, devstack: DevStack, workdir: Path, *, partitions: int = 2, routes: list[dict] | None = None,
                 extra_env: dict[str, str] | None = None, state: str | None = None) -> None:  # fmt: skip
        """`state`: "postgres" (default; LAYERFILL_TEST_STATE overrides) puts the pipeline's state in a schema of
        its own in the devstack's PostgreSQL, as the devstack and production run it; "sqlite" in a file under
        `workdir` (for tests about the file itself)."""
        self.devstack = devstack
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.id = f"t{uuid.uuid4().hex[:8]}"
        self.topics = _topics(f"lf-{self.id}", partitions)
        self.state_kind = state or os.environ.get("LAYERFILL_TEST_STATE", "postgres")
        if self.state_kind == "sqlite":
            self.state_url = f"sqlite:///{workdir / 'state.db'}"
        elif self.state_kind == "postgres":
            self.state_url = _postgres_schema(devstack, f"lf_{self.id}")
        else:
            raise ValueError(f"state must be postgres or sqlite, not {self.state_kind!r}")
        self.routes = routes
        self.extra_env = extra_env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.health_ports: dict[str, int] = {}
        base = devstack.settings()
        self.settings = base.model_copy(update={"topics": self.topics})
        # The devstack env turns the schema registry on: read (and write) what the processes write.
        self.codec = make_codec(self.settings)
        ensure_topics(self.settings.kafka, self.topics.all())

    # -- processes -------------------------------------------------------------------------------
    def env(self, name: str) -> dict[str, str]:
        env = dict(os.environ)
        env["LAYERFILL_ENV_FILE"] = str(self.devstack.ctx.paths.env_file)
        env["LAYERFILL_LOG_FORMAT"] = "text"
        for field, spec in self.topics:
            env[f"LAYERFILL_TOPICS__{field.upper()}__NAME"] = spec.name
        env["LAYERFILL_STATE__DATABASE_URL"] = self.state_url
        env["LAYERFILL_FETCHER__GROUP_ID"] = f"{self.id}-fetcher"
        env["LAYERFILL_SCANNER__GROUP_ID"] = f"{self.id}-scanner"
        env["LAYERFILL_FETCHER__INSTANCE_ID"] = f"{self.id}-{name}"
        env["LAYERFILL_FETCHER__RETRY_DELAYS_S"] = "[1, 2]"
        port = self.health_ports.setdefault(name, free_port())
        env["LAYERFILL_FETCHER__HEALTH_PORT"] = str(port)
        env["LAYERFILL_SCANNER__HEALTH_PORT"] = str(port)
        if self.routes is not None:
            env["LAYERFILL_ROUTES"] = json.dumps(self.routes)
        env.update(self.extra_env)
        return env

    def start(self, role: str, name: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        name = name or role
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        full_env = self.env(name)
        full_env.update(env or {})
        proc = subprocess.Popen(
            [sys.executable, "-m", "layerfill.cli.main", "run", role],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        if role == "bridge":
            self._wait_http(f"http://127.0.0.1:{self.devstack.ctx.ports.bridge}/healthz", proc, name)
        else:
            self._wait_http(f"http://127.0.0.1:{self.health_ports[name]}/readyz", proc, name)
        return proc

    def _wait_http(self, url: str, proc: subprocess.Popen, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}):\n{self.log(name)}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready within {timeout}s:\n{self.log(name)}")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill(self, name: str) -> None:
        self.stop(name, signal.SIGKILL)

    def log(self, name: str) -> str:
        p = self.workdir / f"{name}.log"
        return p.read_text(errors="replace")[-6000:] if p.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        with contextlib.suppress(Exception):
            delete_topics(self.settings.kafka, [s.name for _, s in self.topics])
        if self.state_kind == "postgres":
            with contextlib.suppress(Exception):
                _postgres_schema(self.devstack, f"lf_{self.id}", drop=True)

    # -- reading outputs ---------------------------------------------------------------------------
    def read(self, topic: str, *, until: Callable[[list[dict[str, Any]]], bool] | None = None, timeout: float = 60,
             raw: bool = False) -> list[dict[str, Any]]:  # fmt: skip
        """Everything committed on `topic` so far (read_committed), decoded; waits until `until(records)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                records = self._read_all(topic, raw)
            except KafkaException:
                # Right after a broker restart (failure drills) leadership is still moving (NOT_LEADER_FOR_PARTITION,
                # which librdkafka does not flag retriable here): ask again until the deadline.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            if until is None or until(records) or time.monotonic() > deadline:
                if until is not None and not until(records):
                    raise AssertionError(
                        f"condition on {topic} not met within {timeout}s; have {len(records)} records\n"
                        + "\n".join(f"--- {n}\n{self.log(n)}" for n in self.procs)
                    )
                return records
            time.sleep(0.5)

    def _read_all(self, topic: str, raw: bool) -> list[dict[str, Any]]:
        c = Consumer(
            {
                "bootstrap.servers": self.settings.kafka.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            parts = [TopicPartition(topic, p) for p in md.partitions]
            ends = {}
            for tp in parts:
                low, high = c.get_watermark_offsets(tp, timeout=10)
                if high > low:
                    ends[tp.partition] = high
            if not ends:
                return []
            c.assign([TopicPartition(topic, p, 0) for p in ends])
            out: list[dict[str, Any]] = []
            done: set[int] = set()
            deadline = time.monotonic() + 20
            while len(done) < len(ends) and time.monotonic() < deadline:
                for m in c.consume(500, timeout=0.5):
                    if m.error():
                        continue
                    if raw:
                        out.append({"key": m.key(), "value": m.value(), "headers": dict(m.headers() or []),
                                    "partition": m.partition(), "offset": m.offset()})  # fmt: skip
                    else:
                        out.append(self.codec.decode(m.value())[1])
                # With read_committed the last offsets may be transaction markers: the position tells.
                for tp in c.position([TopicPartition(topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition]:
                        done.add(tp.partition)
            return out
        finally:
            c.close()

    def publish(self, **kwargs: Any):
        from layerfill.producers.publisher import Publisher

        pub = Publisher(self.settings)
        try:
            return pub.publish_manifest_pulled(**kwargs)
        finally:
            pub.close()
