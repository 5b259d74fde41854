"""What the cache's storage holds: every manifest revision of every repository, optionally under a prefix."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


class CatalogStorage(Protocol):
    def list_repositories(self) -> list[str]: ...
    def list_manifest_revisions(self, repository: str) -> list[str]: ...
    def list_tags(self, repository: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class StoredManifest:
    repository: str
    digest: str
    tags: tuple[str, ...] = field(default=())

    @property
    def position(self) -> tuple[str, str]:
        """Enumeration order, and what a checkpoint records."""
        return (self.repository, self.digest)


def format_position(position: tuple[str, str]) -> str:
    return f"{position[0]}@{position[1]}"


def parse_position(text: str) -> tuple[str, str]:
    repository, sep, digest = text.rpartition("@")
    if not sep or not repository or not digest:
        raise ValueError(f"invalid checkpoint {text!r}: expected REPOSITORY@DIGEST")
    return repository, digest


def matches_prefix(repository: str, prefix: str | None) -> bool:
    """`prefix` matches whole path components or a leading part of one (`team/` or `tea` both match `team/app`)."""
    return not prefix or repository.startswith(prefix)


def list_repositories(storage: CatalogStorage, prefix: str | None = None) -> list[str]:
    return [r for r in storage.list_repositories() if matches_prefix(r, prefix)]


def stored_manifests(
    storage: CatalogStorage, repositories: list[str], after: tuple[str, str] | None = None
) -> Iterator[StoredManifest]:
    """Every manifest revision of `repositories` in (repository, digest) order, skipping those at or
    before the position `after` (a checkpoint from an earlier run)."""
    for repository in sorted(repositories):
        if after is not None and repository < after[0]:
            continue  # whole repository done in an earlier run
        by_digest: dict[str, list[str]] = {}
        for tag, digest in storage.list_tags(repository).items():
            by_digest.setdefault(digest, []).append(tag)
        for digest in storage.list_manifest_revisions(repository):
            item = StoredManifest(repository, digest, tuple(sorted(by_digest.get(digest, []))))
            if after is not None and item.position <= after:
                continue
            yield item
