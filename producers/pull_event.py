"""A manifest pull as the producers see it: the typed ManifestPulled record, and what a request held besides."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from layerfill.serde.records import ManifestPulled

# A pull as every producer builds it: the ManifestPulled record itself (validated when built).
PullEvent = ManifestPulled


@dataclass(frozen=True)
class InvalidEvent:
    """One event of an otherwise well-formed request that cannot become a ManifestPulled. Dead-lettered
    (not answered 400): a 4xx would make the registry retry the whole batch forever."""

    raw: Any
    reason: str


@dataclass
class Parsed:
    events: list[PullEvent] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)  # reason -> count

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1


class MalformedBody(ValueError):
    """The request body as a whole is not what the endpoint accepts: answered 400 with this reason."""


def load_json_body(body: bytes) -> object:
    """The request body as JSON, or MalformedBody (answered 400) naming why not."""
    try:
        # Strictly UTF-8 (RFC 8259 section 8.1): json.loads(bytes) also guesses UTF-16/32 and lets encoded
        # surrogates through ("surrogatepass"), which no registry sends and nothing downstream can encode.
        return json.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise MalformedBody("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers past int's digit limit
        raise MalformedBody(f"body is not valid JSON: {exc}") from None
