"""Everything a service needs to know about the stack it belongs to: ports, paths, flags, dev secrets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from .install import Installer
from .paths import Paths, default_paths

DistributionImpl = Literal["v3", "2.8"]


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"LAYERFILL_DEVSTACK_{name}_PORT", default))


@dataclass(frozen=True)
class Ports:
    kafka: int = field(default_factory=lambda: _port("KAFKA", 19092))
    kafka_controller: int = field(default_factory=lambda: _port("KAFKA_CONTROLLER", 19093))
    s3: int = field(default_factory=lambda: _port("S3", 19000))
    upstream: int = field(default_factory=lambda: _port("UPSTREAM", 15000))
    proxy: int = field(default_factory=lambda: _port("PROXY", 15001))
    schema_registry: int = field(default_factory=lambda: _port("SCHEMA_REGISTRY", 18081))
    postgres: int = field(default_factory=lambda: _port("POSTGRES", 15432))
    clair: int = field(default_factory=lambda: _port("CLAIR", 16060))
    clair_introspection: int = field(default_factory=lambda: _port("CLAIR_INTROSPECTION", 16061))
    bridge: int = field(default_factory=lambda: _port("BRIDGE", 18080))
    # Quay (`up --with quay`): the web process with the Kafka logs model, a second one on the database logs
    # model (for the logs-API source), its Redis and the Elasticsearch stand-in its Kafka logs model needs.
    quay: int = field(default_factory=lambda: _port("QUAY", 18300))
    quay_dblogs: int = field(default_factory=lambda: _port("QUAY_DBLOGS", 18301))
    quay_es: int = field(default_factory=lambda: _port("QUAY_ES", 18302))
    quay_redis: int = field(default_factory=lambda: _port("QUAY_REDIS", 16379))
    ui: int = field(default_factory=lambda: _port("UI", 18092))  # `layerfill run ui`, the status page


@dataclass(frozen=True)
class DevSecrets:
    # Development-only credentials for services bound to 127.0.0.1; never used outside the devstack.
    s3_access_key: str = "layerfill"
    s3_secret_key: str = "layerfill-devstack-secret"
    bridge_token: str = "devstack-bridge-token"
    quay_admin: str = "quayadmin"
    quay_admin_password: str = "quayadmin-devstack-pw"
    quay_secret_key: str = "devstack-quay-secret-key-0123456789abcdef"


@dataclass
class StackContext:
    paths: Paths = field(default_factory=default_paths)
    ports: Ports = field(default_factory=Ports)
    secrets: DevSecrets = field(default_factory=DevSecrets)
    distribution: DistributionImpl = "v3"
    host: str = "127.0.0.1"
    s3_bucket: str = "registry"
    proxy_root: str = "/proxy"  # S3 rootdirectory of the proxy cache's storage
    with_quay: bool = False  # also run Quay (a proxy-cache organization of the upstream) and its workers
    quay_org: str = "cache"  # Quay's proxy-cache organization: clients pull <quay>/cache/<upstream repository>
    quay_robot: str = "layerfill"  # the robot layerfill pulls with (full name cache+layerfill)

    @property
    def installer(self) -> Installer:
        return Installer(self.paths)

    @property
    def bridge_url(self) -> str:
        return f"http://{self.host}:{self.ports.bridge}"
