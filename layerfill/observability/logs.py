"""Structured logs: one JSON object per line with the event id and other context passed as `extra`."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _extra_fields(record: logging.LogRecord) -> Iterator[tuple[str, object]]:
    """The context passed as `extra=`: whatever a LogRecord does not carry by itself."""
    return ((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in _extra_fields(record):
            doc[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


# Values that would break a logfmt pair or start a new line are quoted JSON-style, so an event field
# carrying "\n" or "x=y" cannot forge a line or a field in the text format.
_NEEDS_QUOTING = re.compile(r'[\s"=\\]|[^\x20-\x7e]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not _NEEDS_QUOTING.search(text):
        return text
    return json.dumps(text)


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], text)


class TextFormatter(logging.Formatter):
    """Human-readable lines for development; one record is always exactly one line (plus a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={_logfmt_value(v)}" for k, v in _extra_fields(record))
        base = f"{record.levelname.lower():7} {record.name}: {_escape_controls(record.getMessage())}"
        out = f"{base} {extras}".rstrip()
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
