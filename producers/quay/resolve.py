"""A tag pull names no digest: HEAD the tag through Quay (as layerfill's robot) for the digest it serves.

The HEAD is itself a pull by the robot in Quay's logs, which the source drops. The tag may have moved since
the pull was logged; the event then names the digest the tag points to now (documented, rare in a cache)."""

from __future__ import annotations

import time
from collections.abc import Callable

from layerfill.ops.catalog_api import RegistryApi
from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import UpstreamError


class ResolveFailed(RuntimeError):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class TagResolver:
    def __init__(
        self,
        quay_url: str,
        credentials: tuple[str, str] | None,
        deadline_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        creds = Credentials(*credentials) if credentials else None
        self.client = RegistryApi(quay_url, creds, max_concurrency=4)
        self.deadline_s = deadline_s
        self.sleep = sleep

    def resolve(self, repository: str, tag: str) -> str:
        """The digest repository:tag points at, retrying transient failures (Quay restarting) until the deadline."""
        deadline = time.monotonic() + self.deadline_s
        delay = 0.5
        while True:
            try:
                digest = self.client.manifest_digest(repository, tag)
                if digest is None:
                    raise ResolveFailed(f"HEAD {repository}:{tag} through Quay: no such tag (404)", transient=False)
                return digest
            except UpstreamError as exc:
                if not exc.transient:
                    raise ResolveFailed(f"HEAD {repository}:{tag} through Quay: {exc}", transient=False) from exc
                if time.monotonic() + delay > deadline:
                    raise ResolveFailed(f"HEAD {repository}:{tag} through Quay: {exc}", transient=True) from exc
            self.sleep(delay)
            delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self.client.close()
