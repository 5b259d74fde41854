"""Routing: which upstream (and sink) serves an event's (registry, repository). Pure: no I/O.

Events never name the upstream; only this configuration does, so an event cannot point the fetcher at an
arbitrary host. No matching route means the event is dead-lettered."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from layerfill.oci.referrers import ReferrerPolicy


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
