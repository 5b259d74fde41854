"""Configuration and start-up failures as one line naming the field or cause, plus a hint.

`describe` is pure: it maps an exception to a Problem, or None for an exception that is a bug (which keeps its
traceback). The CLI app's group (layerfill/cli/main.py) is the one place that calls it, for every command."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

# Field names whose values never appear in a message.
_SECRET_WORDS = ("password", "secret", "token", "key", "auth")
_MAX_VALUE = 60


@dataclass(frozen=True)
class Problem:
    message: str
    hint: str
    exit_code: int = 2

    def line(self) -> str:
        return f"error: {self.message} (hint: {self.hint})"


def env_var(loc: tuple[Any, ...]) -> str:
    """The environment variable of a settings field: ('fetcher', 'workers') -> LAYERFILL_FETCHER__WORKERS.
    A list item (routes[0].x) is set through its list's variable (LAYERFILL_ROUTES, JSON)."""
    names: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break
        names.append(str(part).upper())
    return "LAYERFILL_" + "__".join(names)


def field_path(loc: tuple[Any, ...]) -> str:
    """('routes', 0, 'upstream_url') -> routes[0].upstream_url"""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _shown(loc: tuple[Any, ...], value: Any) -> str:
    if any(w in str(part).lower() for part in loc for w in _SECRET_WORDS):
        return "'***'"
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _validation(exc: Any) -> Problem:
    errors = exc.errors(include_url=False)
    parts = []
    hints = []
    for e in errors:
        loc = tuple(e.get("loc") or ())
        where = field_path(loc) or exc.title
        msg = str(e.get("msg", "invalid")).rstrip(".")
        if e.get("type") == "missing":
            parts.append(f"{where}: required")
        else:
            parts.append(f"{where}={_shown(loc, e.get('input'))}: {msg}")
        if loc:
            var = env_var(loc)
            origin = "the environment" if var in os.environ else "the LAYERFILL_CONFIG file or the devstack env file"
            hints.append(f"{var} in {origin}")
    hint = "fix " + ", ".join(dict.fromkeys(hints)) if hints else "fix the settings"
    return Problem(f"invalid setting {'; '.join(parts)}", hint)


def describe(exc: BaseException) -> Problem | None:
    """A one-line Problem for a configuration or start-up failure; None for anything else (a bug)."""
    import pydantic
    import yaml

    from layerfill.config.settings import ConfigFileError
    from layerfill.devstack.stack import UnknownService
    from layerfill.oci.reference import InvalidReference
    from layerfill.state.engine import StateURLError

    if isinstance(exc, pydantic.ValidationError):
        return _validation(exc)
    if isinstance(exc, ConfigFileError):
        return Problem(str(exc), "point LAYERFILL_CONFIG at a YAML file, or unset it to use the environment alone")
    if isinstance(exc, yaml.YAMLError):
        where = os.environ.get("LAYERFILL_CONFIG", "the config file")
        first = " ".join(str(exc).split())
        return Problem(f"{where} is not valid YAML: {first}", "fix the YAML syntax at the line named")
    if isinstance(exc, StateURLError):
        return Problem(str(exc), "set LAYERFILL_STATE__DATABASE_URL, e.g. postgresql://user@host:5432/layerfill")
    if isinstance(exc, UnknownService):
        return Problem(str(exc), "`layerfill devstack status` lists the services")
    if isinstance(exc, InvalidReference):
        return Problem(str(exc), "names follow the OCI distribution grammar, e.g. registry.example.com/library/debian")
    if _is_database_unreachable(exc):
        return Problem(
            f"cannot reach the state DB: {_first_line(exc)}", "is the database up? check LAYERFILL_STATE__DATABASE_URL"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return Problem(
            f"cannot listen: {exc.strerror or exc}", "another process holds the port; set this process's *_PORT setting"
        )
    return None


def _is_database_unreachable(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return False
    return isinstance(exc, OperationalError)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
