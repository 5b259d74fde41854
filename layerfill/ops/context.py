"""Settings-derived choices the SRE commands share: which registry name events carry, whether a state DB exists."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from layerfill.config.settings import Settings
from layerfill.oci.reference import validate_registry


def event_registry(settings: Settings, explicit: str | None) -> str:
    """The registry host[:port] events name: `--registry`, else `bridge.registry_name`, else the one registry
    every route names. ValueError naming `--registry` when none of these decides it."""
    if explicit:
        return validate_registry(explicit)
    if settings.bridge.registry_name:
        return validate_registry(settings.bridge.registry_name)
    registries = sorted({r.registry for r in settings.routes})
    if len(registries) == 1:
        return registries[0]
    found = ", ".join(registries) or "none"
    raise ValueError(f"invalid --registry: not given, and the routes name {found}; pass --registry HOST[:PORT]")


def state_database_exists(settings: Settings) -> bool:
    """A SQLite state DB that was never created is not opened (opening would create it as a side effect)."""
    url = make_url(settings.state.database_url)
    if not url.drivername.startswith("sqlite"):
        return True
    return bool(url.database) and url.database != ":memory:" and Path(url.database).is_file()
