"""All configuration in one typed model, read from (highest first) init args, the environment
(`LAYERFILL_` prefix, `__` between nested keys), the devstack env file, and a YAML file (`LAYERFILL_CONFIG`)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from layerfill.oci.walk import WalkRules

from .routes import NoRoute, Route, find_route


class ConfigFileError(FileNotFoundError):
    """LAYERFILL_CONFIG names a file that is not there."""


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:19092"
    client_id: str = "layerfill"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    # Passed to librdkafka as is, for settings this model does not name.
    extra: dict[str, str] = Field(default_factory=dict)
    # How often the long-running clients report librdkafka statistics as metrics (layerfill_kafka_*); 0: never.
    statistics_interval_ms: int = Field(15_000, ge=0)

    def client_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            # librdkafka's own log lines go through Python logging (and so the JSON log format), not raw to stderr.
            "logger": logging.getLogger("layerfill.kafka.librdkafka"),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.extra)
        return conf


class TopicSpec(BaseModel):
    name: str
    partitions: int = Field(8, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention_ms: int | None = 7 * 24 * 3600 * 1000
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"


def _topic(name: str, **kw: Any) -> Any:
    return Field(default_factory=lambda: TopicSpec(name=name, **kw))


class TopicsSettings(BaseModel):
    manifest_pulled: TopicSpec = _topic("layerfill.manifest-pulled")
    layer_cached: TopicSpec = _topic("layerfill.layer-cached")
    image_cached: TopicSpec = _topic("layerfill.image-cached")
    image_scanned: TopicSpec = _topic("layerfill.image-scanned")
    retry: TopicSpec = _topic("layerfill.manifest-pulled.retry")
    dlq: TopicSpec = _topic("layerfill.dlq", retention_ms=30 * 24 * 3600 * 1000)
    # The scanner's delayed retries of ImageCached (the fetcher's retry topic carries ManifestPulled only).
    image_cached_retry: TopicSpec = _topic("layerfill.image-cached.retry")

    def all(self) -> list[TopicSpec]:
        return [
            self.manifest_pulled,
            self.layer_cached,
            self.image_cached,
            self.image_scanned,
            self.retry,
            self.dlq,
            self.image_cached_retry,
        ]


class SchemaRegistrySettings(BaseModel):
    # Unset: Avro single-object encoding. Set: Confluent framing with ids from this registry.
    url: str | None = None
    basic_auth_user_info: SecretStr | None = None


class S3Settings(BaseModel):
    endpoint: str = "http://127.0.0.1:19000"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    region: str = "us-east-1"
    bucket: str = "registry"
    # The registry's storage rootdirectory: keys are `<root without leading slash>/docker/registry/v2/...`.
    root_directory: str = "/"
    # Sign each multipart part's SHA-256 (over plain http; https parts are never signed). Off: parts are sent as
    # UNSIGNED-PAYLOAD, saving a hash pass per byte in the fetcher and in the S3 server; the fetcher has verified
    # the blob's digest before it completes the upload, and a blob stored in one PUT is always signed with its
    # own digest, which the server checks. Turn on for an S3 server that refuses unsigned payloads over http.
    sign_parts: bool = False


class BridgeSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 18080
    # Shared secret: accepted as `Authorization: Bearer <token>` or the `X-Layerfill-Token` header.
    token: SecretStr | None = None
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Name events with this registry host[:port] instead of the notification's request.host.
    registry_name: str | None = None
    delivery_timeout_s: float = 10.0


class StageSettings(BaseModel):
    """What every consumer stage on the transactional loop (layerfill.kafka.stage) is configured with."""

    group_id: str
    # The transactional.id is `<prefix>-<instance_id>`; the prefix defaults to the group id.
    transactional_id_prefix: str | None = None
    # Must be unique per running process and stable across its restarts (a pod name, a StatefulSet
    # ordinal): the transactional.id derived from it fences a crashed predecessor's open transaction.
    instance_id: str = Field(default_factory=socket.gethostname)
    batch_size: int = Field(500, ge=1)
    max_poll_interval_ms: int = Field(900_000, ge=10_000)
    max_inflight_images: int = Field(16, ge=1)  # events handled at once per process
    # Finished outcomes commit at most this often (one transaction each time); records of a partition consumed and
    # not committed beyond max_pending pause it (a slow image at its head holds the rest of it back).
    commit_interval_s: float = Field(0.1, ge=0)
    max_pending: int = Field(1000, ge=1)
    attempts_in_process: int = Field(3, ge=1)
    retry_delays_s: list[float] = Field(default_factory=lambda: [30.0, 120.0, 600.0])  # the retry topic's delays
    health_port: int | None = None

    @property
    def transactional_id(self) -> str:
        return f"{self.transactional_id_prefix or self.group_id}-{self.instance_id}"


class FetcherSettings(StageSettings):
    group_id: str = "layerfill-fetcher"
    transactional_id_prefix: str | None = "layerfill-fetcher"
    workers: int = Field(8, ge=1)  # concurrent blob transfers per process
    # S3 multipart part size: 8 MiB, so the default buffer_bytes (64 MiB) lets all 8 workers upload at once.
    part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Part buffers of all the process's uploads together (layerfill/sinks/budget.py): a transfer waits for room
    # before it reads a part, so memory is bounded by this, not by `workers` or blob sizes. A part larger than
    # the whole budget still goes up, alone.
    buffer_bytes: int = Field(64 * 1024 * 1024, ge=5 * 1024 * 1024)
    health_port: int | None = 18090
    max_layers: int = 10_000
    # Distinct images a process remembers complete (so their repeat pulls skip the state DB and the Avro decode)
    # and when each is next due an artifact recheck. Two fixed tables taken at start-up, ~134 bytes per image of
    # this capacity (bench/cache_memory.py): ~13 MiB per process at the default, none of it growing with images.
    known_images: int = Field(100_000, ge=1)
    # Upstream HTTP timeouts: connecting, and the longest silence within a response (a stalled body is resumed).
    upstream_connect_timeout_s: float = Field(10.0, gt=0)
    upstream_read_timeout_s: float = Field(60.0, gt=0)


class ScannerSettings(StageSettings):
    group_id: str = "layerfill-scanner"
    clair_url: str = "http://127.0.0.1:16060"
    # An index request, polling included, that has no final state by then counts as Clair being unavailable.
    poll_deadline_s: float = Field(600.0, gt=0)
    poll_interval_s: float = Field(1.0, gt=0)  # first poll delay; doubles up to poll_max_interval_s
    poll_max_interval_s: float = Field(10.0, gt=0)
    request_timeout_s: float = Field(30.0, gt=0)  # every Clair request but the (synchronous) index submission
    batch_size: int = Field(100, ge=1)
    max_inflight_images: int = Field(4, ge=1)  # concurrent scans per process
    retry_delays_s: list[float] = Field(default_factory=lambda: [30.0, 120.0, 600.0, 1800.0])
    # Presigned layer URLs (distribution sink) must outlive the scan; Clair fetches each layer once.
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    # The S3 endpoint as Clair reaches it, when it differs from s3.endpoint (the URL's signature covers the host).
    presign_endpoint: str | None = None
    # Scan manifests again even when a final result is recorded (a replay meant to refresh every report).
    rescan: bool = False
    health_port: int | None = 18091

    @field_validator("clair_url", "presign_endpoint")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return None if v is None else v.rstrip("/")


class QuayLogsSettings(BaseModel):
    """`layerfill run quay-logs`: Quay's pull logs -> ManifestPulled (producers/quay/)."""

    # kafka: Quay's action logs on Kafka (LOGS_MODEL elasticsearch + producer kafka); api: its logs API
    # (the default database logs model), polled.
    source: Literal["kafka", "api"] = "kafka"
    # Quay's base URL: tags are resolved to digests with a HEAD here, and the API source reads its logs here.
    quay_url: str = "http://127.0.0.1:8080"
    # host[:port] clients pull from, as events name it (default: quay_url's host[:port]).
    registry: str | None = None
    # Organizations whose pulls become events; default: those the routes for `registry` name (their prefix).
    organizations: list[str] | None = None
    # Pullers whose pulls are dropped (layerfill's own robot, or its pulls come back as events); the routes'
    # proxy_username for `registry` is always dropped too.
    ignore_users: list[str] = Field(default_factory=list)
    # Kafka source: Quay's topic (LOGS_MODEL_CONFIG.kafka_config.topic) and this source's consumer group.
    logs_topic: str = "quay.logs"
    group_id: str = "layerfill-quay-logs"
    transactional_id_prefix: str = "layerfill-quay-logs"
    instance_id: str = Field(default_factory=socket.gethostname)
    batch_size: int = Field(200, ge=1)
    # kind_id -> kind name: a configured map, else read from Quay's `logentrykind` table through this URL.
    kinds: dict[int, str] | None = None
    kinds_database_url: SecretStr | None = None
    # API source: an OAuth token with org:admin on the organizations; poll interval; pulls logged this late
    # (a request's transaction committing after a later one's) are still found.
    api_token: SecretStr | None = None
    poll_interval_s: float = Field(5.0, gt=0)
    lookback_s: float = Field(60.0, ge=0)
    # Where the API source keeps its checkpoint, written in the same Kafka transaction as the events.
    checkpoint_topic: str = "layerfill.quay-logs.checkpoints"
    # A tag pull is resolved with a HEAD through Quay; tried this long (Quay restarting) before dead-lettering.
    resolve_deadline_s: float = Field(120.0, gt=0)
    health_port: int | None = 18093

    @field_validator("quay_url")
    @classmethod
    def _quay_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @property
    def transactional_id(self) -> str:
        return f"{self.transactional_id_prefix}-{self.source}-{self.instance_id}"

    def registry_name(self) -> str:
        return self.registry or self.quay_url.split("://", 1)[1].split("/", 1)[0]


class UiSettings(BaseModel):
    """The read-only status page (`layerfill run ui`)."""

    host: str = "127.0.0.1"
    port: int = Field(18092, ge=1, le=65535)
    image_limit: int = Field(200, ge=1, le=10_000)  # images listed, most recently updated first
    dead_letter_sample: int = Field(1000, ge=1)  # newest dead letters per DLQ partition grouped by cause


class StateSettings(BaseModel):
    database_url: str = Field(default_factory=lambda: f"sqlite:///{Path.cwd() / 'layerfill-state.db'}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LAYERFILL_", env_nested_delimiter="__", extra="ignore", nested_model_default_partial_update=True
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicsSettings = Field(default_factory=TopicsSettings)
    schema_registry: SchemaRegistrySettings = Field(default_factory=SchemaRegistrySettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    fetcher: FetcherSettings = Field(default_factory=FetcherSettings)
    scanner: ScannerSettings = Field(default_factory=ScannerSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    quay_logs: QuayLogsSettings = Field(default_factory=QuayLogsSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    routes: list[Route] = Field(default_factory=list)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("routes")
    @classmethod
    def _unique_routes(cls, routes: list[Route]) -> list[Route]:
        seen = set()
        for r in routes:
            key = (r.registry, r.repository_prefix)
            if key in seen:
                raise ValueError(f"two routes for registry {r.registry!r} prefix {r.repository_prefix!r}")
            seen.add(key)
        return routes

    def walk_rules(self, route: Route | None) -> WalkRules:
        """How images of `route` are walked (None: every platform), by the fetcher and by the audit alike."""
        platforms = route.platforms if route is not None else None
        return WalkRules.parse(platforms, max_entries=self.fetcher.max_layers)

    def route_for(self, registry: str | None, repository: str) -> Route | None:
        """The route the fetcher would take for `repository`, for commands that read storage rather than events.
        Without a registry, the routes of every registry are considered and None is returned when they disagree
        (the commands then judge by every platform: strict rather than lenient)."""
        if registry is not None:
            try:
                return find_route(self.routes, registry, repository)
            except NoRoute:
                return None
        found: dict[str, Route] = {}
        for registry_name in {r.registry for r in self.routes}:
            try:
                route = find_route(self.routes, registry_name, repository)
            except NoRoute:
                continue
            found[registry_name] = route
        rules = {self.walk_rules(r) for r in found.values()}
        return next(iter(found.values())) if len(rules) == 1 else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, EnvSettingsSource(settings_cls)]
        env_file = _env_file()
        if env_file:
            sources.append(DotEnvSettingsSource(settings_cls, env_file=env_file))
        yaml_file = os.environ.get("LAYERFILL_CONFIG")
        if yaml_file:
            if not Path(yaml_file).is_file():
                raise ConfigFileError(f"LAYERFILL_CONFIG names {yaml_file!r}, which is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def _env_file() -> Path | None:
    """The devstack's env file: `LAYERFILL_ENV_FILE`, else `.devstack/env` in this checkout when it exists."""
    explicit = os.environ.get("LAYERFILL_ENV_FILE")
    if explicit:
        return Path(explicit) if explicit != "none" else None
    from layerfill.devstack.paths import default_paths

    candidate = default_paths().env_file
    return candidate if candidate.is_file() else None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    if config_file is not None:
        os.environ["LAYERFILL_CONFIG"] = str(config_file)
    return Settings(**overrides)
