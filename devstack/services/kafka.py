"""Kafka 4.x as one combined KRaft broker+controller, run from Maven Central jars."""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid

from .base import Service, ServiceError, port_open

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
"""


class Kafka(Service):
    name = "kafka"

    @property
    def endpoint(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.kafka}"

    def _dir(self):
        return self.ctx.paths.data / "kafka"

    def _config(self) -> str:
        h, p = self.ctx.host, self.ctx.ports
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{h}:{p.kafka_controller}",
            "listeners": f"PLAINTEXT://{h}:{p.kafka},CONTROLLER://{h}:{p.kafka_controller}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p.kafka}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self._dir() / "logs"),
            "num.partitions": "8",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Tests create and delete topics; the product creates its own with `layerfill topics ensure`.
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        lib = self.ctx.installer.kafka_home() / "lib" / "*"
        conf = self._dir() / "log4j2.properties"
        return [
            java,
            "-Xms256m",
            "-Xmx1g",
            f"-Dlog4j2.configurationFile={conf}",
            "-cp",
            str(lib),
            main,
            *args,
        ]

    def start(self) -> None:
        if self.process.pid():
            return
        d = self._dir()
        d.mkdir(parents=True, exist_ok=True)
        (d / "server.properties").write_text(self._config())
        (d / "log4j2.properties").write_text(LOG4J2.format(log=self.ctx.paths.logs / "kafka-server.log"))
        if not (d / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            # An id may start with "-" (1 in 64): passed as "--cluster-id=<id>" it is never read as an option.
            res = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(d / "server.properties"),
                ),
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                raise ServiceError(f"kafka storage format failed: {res.stdout}{res.stderr}")
        self.process.start(self._java("kafka.Kafka", str(d / "server.properties")))

    def healthy(self) -> bool:
        if not port_open(self.ctx.host, self.ctx.ports.kafka):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.endpoint}).list_topics(timeout=3)
        except Exception:
            return False
        return bool(md.brokers)

    def env(self) -> dict[str, str]:
        return {"LAYERFILL_KAFKA__BOOTSTRAP_SERVERS": self.endpoint}
