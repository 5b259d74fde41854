"""Record keys: one repository stays on one partition, so its events are processed in order."""

from __future__ import annotations


def repository_key(registry: str, repository: str) -> bytes:
    return f"{registry}/{repository}".encode()
