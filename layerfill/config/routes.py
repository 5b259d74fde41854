"""Routing: which upstream (and sink) serves an event's (registry, repository). Pure: no I/O.

Events never name the upstream; only this configuration does, so an event cannot point the fetcher at an
arbitrary host. No matching route means the event is dead-lettered."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from layerfill.oci.referrers import ReferrerPolicy


class UpstreamCost(BaseModel):
    """How a route trades time-to-complete for upstream egress (README, "Upstream cost").

    A layer missing from the cache when the fetcher meets the image is usually being pulled by the client that
    triggered the event: the proxy is fetching it from the upstream at that moment. Fetching it too would double
    its upstream bytes, so the fetcher waits (bounded) while the client's pull makes progress and fetches only
    what is still missing when the pull went quiet."""

    defer_layers: bool = Field(True, description="wait for a client's pull in progress before fetching a layer")
    grace_s: float = Field(1.0, ge=0, le=600, description="from the manifest pull: time for the client to start")
    idle_s: float = Field(0.75, gt=0, le=600, description="no sign of progress this long: the client's pull is over")
    max_wait_s: float = Field(300.0, ge=0, le=86_400, description="never wait longer than this per image")
    poll_s: float = Field(0.25, gt=0, le=60, description="how often storage is looked at while waiting")
    # An upload the proxy keeps open this long without finishing counts as abandoned, not as progress.
    upload_stale_s: float = Field(60.0, gt=0, le=86_400)
    # One upstream GET per blob across the consumer group: a lease in the state DB, renewed while held.
    lease_ttl_s: float = Field(30.0, ge=2, le=3600, description="a crashed holder blocks a blob this long at most")

    @model_validator(mode="after")
    def _bounds(self) -> UpstreamCost:
        if self.poll_s > self.idle_s:
            raise ValueError(f"poll_s ({self.poll_s}) must not exceed idle_s ({self.idle_s})")
        return self


class Route(BaseModel):
    registry: str = Field(description="host[:port] that clients pull from (the proxy cache), as events name it")
    repository_prefix: str = Field("", description="matches this repository and everything below it; '' = all")
    upstream_url: str = Field(description="base URL of the upstream registry, e.g. https://registry-1.docker.io")
    upstream_prefix: str = Field("", description="prepended to the repository upstream, e.g. 'library/'")
    strip_prefix: bool = Field(True, description="strip repository_prefix before adding upstream_prefix")
    username: str | None = None
    password: SecretStr | None = None
    # Token realms on other hosts that may receive the upstream credentials (Docker Hub: auth.docker.io).
    credential_hosts: list[str] = Field(default_factory=list)
    sink: Literal["distribution", "registry"] = "distribution"
    # For the registry (warm-through) sink: where the proxy registry's /v2 API is and how to log in.
    proxy_url: str | None = None
    proxy_username: str | None = None
    proxy_password: SecretStr | None = None
    platforms: list[str] | None = Field(None, description="os/arch[/variant] to keep from indexes; None = all")
    max_concurrency: int = Field(8, ge=1, le=256, description="concurrent requests to this upstream")
    # Signatures, attestations and SBOMs that travel with each image (README "Signatures, attestations, SBOMs").
    referrers: ReferrerPolicy = Field(default_factory=ReferrerPolicy)
    name: str | None = Field(None, description="the `route` label of metrics; default `<registry>/<prefix>`")
    upstream_cost: UpstreamCost = Field(default_factory=UpstreamCost)

    @property
    def label(self) -> str:
        return self.name or f"{self.registry}/{self.repository_prefix.rstrip('/')}"

    @field_validator("upstream_url", "proxy_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("repository_prefix", "upstream_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if ".." in v or v.startswith("/"):
            raise ValueError(f"invalid prefix {v!r}")
        return v

    def matches(self, registry: str, repository: str) -> bool:
        if registry.lower() != self.registry.lower():
            return False
        p = self.repository_prefix.rstrip("/")
        return not p or repository == p or repository.startswith(p + "/")

    def upstream_repository(self, repository: str) -> str:
        """The repository name to ask the upstream for."""
        p = self.repository_prefix.rstrip("/")
        name = repository
        if self.strip_prefix and p and repository.startswith(p + "/"):
            name = repository[len(p) + 1 :]
        return f"{self.upstream_prefix}{name}"


class NoRoute(LookupError):
    def __init__(self, registry: str, repository: str) -> None:
        super().__init__(f"no route for registry {registry!r} repository {repository!r}")
        self.registry = registry
        self.repository = repository


def find_route(routes: list[Route], registry: str, repository: str) -> Route:
    """The matching route with the longest repository prefix."""
    best: Route | None = None
    for r in routes:
        if r.matches(registry, repository) and (best is None or len(r.repository_prefix) > len(best.repository_prefix)):
            best = r
    if best is None:
        raise NoRoute(registry, repository)
    return best
