"""Avro event contracts: one ``<RecordName>.avsc`` per record, the single source of truth.

``released/vN/`` holds the schemas as shipped in release N; readers must stay able to decode
anything written with any released version (see ``layerfill.serde.compat``).

Parsed schemas are cached and shared: treat them as read-only.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

SCHEMA_DIR = Path(__file__).resolve().parent
RELEASED_DIR = SCHEMA_DIR / "released"
NAMESPACE = "io.layerfill.events"

_VERSION_RE = re.compile(r"v([1-9][0-9]*)")


def _names_in(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.avsc"))


def schema_names() -> list[str]:
    """Record names of the current schemas, e.g. ``["ImageCached", ..., "ManifestPulled"]``."""
    return _names_in(SCHEMA_DIR)


def released_versions() -> list[str]:
    """Released versions, oldest first (``["v1", "v2", ...]``, compared numerically)."""
    if not RELEASED_DIR.is_dir():
        return []
    found = [p.name for p in RELEASED_DIR.iterdir() if p.is_dir() and _VERSION_RE.fullmatch(p.name)]
    return sorted(found, key=lambda v: int(v[1:]))


def released_names(version: str) -> list[str]:
    """Record names present in one released version."""
    return _names_in(_version_dir(version))


def _version_dir(version: str) -> Path:
    if version not in released_versions():
        raise ValueError(f"unknown released schema version {version!r}; known: {released_versions()}")
    return RELEASED_DIR / version


def _schema_file(directory: Path, name: str) -> Path:
    # Only names that exist are accepted, so a name can never walk out of the directory.
    if name not in _names_in(directory):
        raise ValueError(f"unknown schema {name!r} in {directory}; known: {_names_in(directory)}")
    return directory / f"{name}.avsc"


def load_schema_json(name: str) -> dict[str, Any]:
    """The current schema ``name`` as plain JSON (a fresh copy; e.g. to register with a registry)."""
    return json.loads(_schema_file(SCHEMA_DIR, name).read_text(encoding="utf-8"))


def load_released_json(version: str, name: str) -> dict[str, Any]:
    """Released schema ``name`` of ``version`` as plain JSON (a fresh copy)."""
    return json.loads(_schema_file(_version_dir(version), name).read_text(encoding="utf-8"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The current schema ``name``, parsed by fastavro (cached, shared: do not mutate)."""
    return fastavro.parse_schema(load_schema_json(name))


@cache
def load_released(version: str, name: str) -> dict[str, Any]:
    """Released schema ``name`` of ``version``, parsed by fastavro (cached, shared: do not mutate)."""
    return fastavro.parse_schema(load_released_json(version, name))
