"""Apicurio Registry 3.x (Quarkus, in-memory H2) for its Confluent-compatible API at /apis/ccompat/v7."""

from __future__ import annotations

import shutil

from .base import Service, http_ok


class SchemaRegistry(Service):
    name = "schema-registry"

    @property
    def endpoint(self) -> str:
        return f"http://{self.ctx.host}:{self.ctx.ports.schema_registry}/apis/ccompat/v7"

    def start(self) -> None:
        java = shutil.which("java") or "java"
        jar = self.ctx.installer.apicurio_jar()
        argv = [
            java, "-Xms128m", "-Xmx512m",
            f"-Dquarkus.http.port={self.ctx.ports.schema_registry}", f"-Dquarkus.http.host={self.ctx.host}",
            "-jar", str(jar),
        ]  # fmt: skip
        self.process.start(argv, cwd=jar.parent)

    def healthy(self) -> bool:
        return http_ok(f"http://{self.ctx.host}:{self.ctx.ports.schema_registry}/health/ready")

    def env(self) -> dict[str, str]:
        # The second entry turns the registry on for everything that reads the env file (the processes, the demo,
        # the tests): events are written with Confluent framing, which Kafka tooling can decode.
        return {
            "LAYERFILL_DEVSTACK_SCHEMA_REGISTRY_URL": self.endpoint,
            "LAYERFILL_SCHEMA_REGISTRY__URL": self.endpoint,
        }
