"""Avro event contracts: one ``<RecordName>.avsc`` per record, the single source of truth.

``released/vN/`` holds the schemas as shipped in release N; readers must stay able to decode
anything written with any released version (checked by ``layerfill.serde.compat``).

Parsed schemas are cached and shared: treat them as read-only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent
NAMESPACE = "io.layerfill.events"

_VERSION_RE = re.compile(r"v([1-9][0-9]*)")


def _names_in(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.avsc"))


def _schema_file(directory: Path, name: str) -> Path:
    # Only names that exist are accepted, so a name can never walk out of the directory.
    if name not in _names_in(directory):
        raise ValueError(f"unknown schema {name!r} in {directory}; known: {_names_in(directory)}")
    return directory / f"{name}.avsc"


class SchemaStore:
    """Schemas under ``directory`` (``*.avsc``) and ``directory/released/vN/*.avsc``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.released_dir = directory / "released"
        self._parsed: dict[tuple[str | None, str], dict[str, Any]] = {}

    def schema_names(self) -> list[str]:
        """Record names of the current schemas, e.g. ``["ImageCached", ..., "ManifestPulled"]``."""
        return _names_in(self.directory)

    def released_versions(self) -> list[str]:
        """Released versions, oldest first (``["v1", "v2", ...]``, compared numerically)."""
        if not self.released_dir.is_dir():
            return []
        found = [p.name for p in self.released_dir.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def released_names(self, version: str) -> list[str]:
        """Record names present in released ``version``."""
        return _names_in(self._version_dir(version))

    def _version_dir(self, version: str) -> Path:
        if version not in self.released_versions():
            raise ValueError(f"unknown released schema version {version!r}; known: {self.released_versions()}")
        return self.released_dir / version

    def load_schema_json(self, name: str) -> dict[str, Any]:
        """Current schema ``name`` as plain JSON (a fresh copy; e.g. to register with a registry)."""
        return json.loads(_schema_file(self.directory, name).read_text(encoding="utf-8"))

    def load_released_json(self, version: str, name: str) -> dict[str, Any]:
        """Released schema ``name`` of ``version`` as plain JSON (a fresh copy)."""
        return json.loads(_schema_file(self._version_dir(version), name).read_text(encoding="utf-8"))

    def load_schema(self, name: str) -> dict[str, Any]:
        """Current schema ``name`` parsed by fastavro (cached, shared: do not mutate)."""
        key = (None, name)
        if key not in self._parsed:
            self._parsed[key] = fastavro.parse_schema(self.load_schema_json(name))
        return self._parsed[key]

    def load_released(self, version: str, name: str) -> dict[str, Any]:
        """Released schema ``name`` of ``version`` parsed by fastavro (cached, shared: do not mutate)."""
        key = (version, name)
        if key not in self._parsed:
            self._parsed[key] = fastavro.parse_schema(self.load_released_json(version, name))
        return self._parsed[key]


DEFAULT_STORE = SchemaStore(SCHEMA_DIR)

schema_names = DEFAULT_STORE.schema_names
released_versions = DEFAULT_STORE.released_versions
released_names = DEFAULT_STORE.released_names
load_schema_json = DEFAULT_STORE.load_schema_json
load_released_json = DEFAULT_STORE.load_released_json
load_schema = DEFAULT_STORE.load_schema
load_released = DEFAULT_STORE.load_released
