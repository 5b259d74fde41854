"""Bring the whole local stack up, report its status, take it down."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .context import StackContext
from .services.base import Service, ServiceError
from .services.clair import Clair
from .services.kafka import Kafka
from .services.postgres import Postgres
from .services.quay import (
    LOGS_TOPIC,
    QuayBlobWorker,
    QuayDbLogsWeb,
    QuayEsStandIn,
    QuayRedis,
    QuaySecurityWorker,
    QuayWeb,
    ensure_database,
    migrate,
    quay_env,
    quay_routes,
)
from .services.registry import ProxyRegistry, UpstreamRegistry
from .services.s3 import S3Server
from .services.schema_registry import SchemaRegistry


class UnknownService(KeyError):
    """A service name the devstack does not have (a KeyError, as before, with a readable message)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown service"


@dataclass
class ServiceStatus:
    name: str
    endpoint: str
    pid: int | None
    healthy: bool
    optional: bool


class Stack:
    def __init__(self, ctx: StackContext | None = None, log: Callable[[str], None] = print) -> None:
        self.ctx = ctx or StackContext()
        self.log = log
        self.kafka = Kafka(self.ctx)
        self.s3 = S3Server(self.ctx)
        self.upstream = UpstreamRegistry(self.ctx)
        self.proxy = ProxyRegistry(self.ctx)
        self.postgres = Postgres(self.ctx)
        self.clair = Clair(self.ctx)
        self.schema_registry = SchemaRegistry(self.ctx)
        self.quay_redis = QuayRedis(self.ctx)
        self.quay_es = QuayEsStandIn(self.ctx)
        self.quay = QuayWeb(self.ctx)
        self.quay_dblogs = QuayDbLogsWeb(self.ctx)
        self.quay_blobworker = QuayBlobWorker(self.ctx, self.quay)
        self.quay_secworker = QuaySecurityWorker(self.ctx, self.quay)
        self.quay_setup: dict[str, str] | None = None

    @property
    def quay_services(self) -> list[Service]:
        return [
            self.quay_redis,
            self.quay_es,
            self.quay,
            self.quay_dblogs,
            self.quay_blobworker,
            self.quay_secworker,
        ]

    @property
    def services(self) -> list[Service]:
        base: list[Service] = [
            self.kafka,
            self.s3,
            self.upstream,
            self.proxy,
            self.postgres,
            self.clair,
            self.schema_registry,
        ]
        return base + (self.quay_services if self.ctx.with_quay else [])

    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        names = ", ".join(s.name for s in self.services)
        raise UnknownService(f"no devstack service named {name!r}; have {names}")

    def install(self) -> None:
        installer = self.ctx.installer
        installer.log = self.log  # builds and downloads report through the stack's log (the CLI's spinner)
        installer.all()
        if self.ctx.with_quay:
            self.quay.installer.log = self.log
            self.quay.installer.install()

    def up(self, install: bool = True) -> None:
        self.ctx.paths.ensure()
        if install:
            self.install()
        # Slow JVMs first, then the chains whose members depend on each other.
        for svc in (self.kafka, self.schema_registry, self.postgres, self.s3):
            self._start(svc)
        self._wait(self.s3)
        self._start(self.upstream)
        # 2.8 in proxy mode panics at start-up when the upstream is unreachable: upstream first.
        self._wait(self.upstream)
        self._start(self.proxy)
        self._wait(self.postgres)
        self._start(self.clair)
        for svc in (self.proxy, self.kafka, self.clair, self.schema_registry):
            self._wait(svc)
        if self.ctx.with_quay:
            self.up_quay()
        self.write_env()

    def up_quay(self) -> None:
        """Quay after PostgreSQL and Kafka (its Kafka producer connects when the app is built)."""
        from layerfill.config.settings import KafkaSettings, TopicSpec
        from layerfill.kafka.admin import ensure_topics

        from .services.quay_setup import QuaySetup

        for svc in (self.quay_redis, self.quay_es):
            self._start(svc)
        ensure_database(self.ctx)
        kafka = KafkaSettings(bootstrap_servers=f"{self.ctx.host}:{self.ctx.ports.kafka}")
        ensure_topics(kafka, [TopicSpec(name=LOGS_TOPIC, partitions=4)])
        webs = [w for w in (self.quay, self.quay_dblogs) if not (w.process.pid() and w.healthy())]
        if webs:
            self.log("migrating Quay's database")
            migrate(self.quay)
        for web in webs:
            web.prepare()
        for svc in (self.quay_redis, self.quay_es):
            self._wait(svc)
        for web in (self.quay, self.quay_dblogs):
            self._start(web)
        for web in (self.quay, self.quay_dblogs):
            self._wait(web)
        self.quay_setup = QuaySetup(self.ctx, self.quay.endpoint).run()
        for svc in (self.quay_blobworker, self.quay_secworker):
            self._start(svc)

    def _start(self, svc: Service) -> None:
        if svc.process.pid() and svc.healthy():
            return
        self.log(f"starting {svc.name}")
        svc.start()

    def _wait(self, svc: Service, timeout: float = 180.0) -> None:
        if not svc.healthy():
            self.log(f"waiting for {svc.name} to be healthy")
        try:
            svc.wait_healthy(timeout)
        except ServiceError as exc:
            if not svc.optional:
                raise
            self.log(f"optional service {svc.name} did not start: {exc}")

    def start(self, name: str) -> None:
        svc = self.service(name)
        self._start(svc)
        self._wait(svc)

    def stop(self, name: str) -> None:
        self.service(name).stop()

    def write_env(self) -> None:
        env: dict[str, str] = {
            "LAYERFILL_DEVSTACK_DIR": str(self.ctx.paths.state),
            "LAYERFILL_DEVSTACK_LOGS": str(self.ctx.paths.logs),
            "LAYERFILL_UI__PORT": str(self.ctx.ports.ui),
        }
        for svc in self.services:
            env.update(svc.env())
        if self.ctx.with_quay:
            from .services.quay_setup import QuaySetup

            setup = self.quay_setup or QuaySetup(self.ctx, self.quay.endpoint).run()
            env["LAYERFILL_DEVSTACK_WITH_QUAY"] = "1"
            env.update(quay_env(self.ctx, setup))
            routes = [self.proxy.default_route(), *quay_routes(self.ctx, setup)]
            env["LAYERFILL_ROUTES"] = "'" + json.dumps(routes) + "'"
        lines = [f"{k}={v}" for k, v in env.items()]
        self.ctx.paths.env_file.write_text("# written by `layerfill devstack up`\n" + "\n".join(lines) + "\n")

    def status(self) -> list[ServiceStatus]:
        return [ServiceStatus(s.name, s.endpoint, s.process.pid(), s.healthy(), s.optional) for s in self.services]

    def down(self) -> list[str]:
        stopped = []
        # Reverse start order: the proxy stops before its storage, Clair before its database. Quay's processes
        # are stopped whether or not this stack was recorded as having them (they stop nothing if not running).
        services = self.services if self.ctx.with_quay else self.services + self.quay_services
        for svc in reversed(services):
            if svc.stop():
                stopped.append(svc.name)
        return stopped
