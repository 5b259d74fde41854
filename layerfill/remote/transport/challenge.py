"""Parsing of `WWW-Authenticate` challenges (RFC 7235) and of the scope a registry path needs. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_SEPARATORS = " \t,="
_REPOSITORY_PATH_RE = re.compile(r"/v2/(?P<name>.+?)/(?:manifests|blobs|tags|referrers)/")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-cased: "basic", "bearer", ...
    params: dict[str, str] = field(default_factory=dict)  # keys lower-cased

    @property
    def scopes(self) -> tuple[str, ...]:
        """The challenge's scope parameter split on spaces (several scopes may be requested at once)."""
        return tuple(self.params.get("scope", "").split())


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in _SEPARATORS and text[pos] != '"':
        pos += 1
    return text[start:pos], pos


def _quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; backslash escapes one character."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    return "".join(out), pos  # unterminated: take what is there


def parse_www_authenticate(header: str | None) -> list[Challenge]:
    """All challenges in a (possibly comma-joined) WWW-Authenticate value, in order.

    A token followed by `=` is a parameter of the current challenge; any other token starts a new
    challenge. Quoted values may contain commas (`scope="repository:a:pull,push"`).
    """
    if not header:
        return []
    challenges: list[tuple[str, dict[str, str]]] = []
    pos = 0
    while pos < len(header):
        pos = _skip(header, pos, " \t,")
        if pos >= len(header):
            break
        word, pos = _token(header, pos)
        if not word:  # stray quote or '=': skip one character and carry on
            pos += 1
            continue
        after = _skip(header, pos, " \t")
        if after < len(header) and header[after] == "=" and challenges:
            value_pos = _skip(header, after + 1, " \t")
            if value_pos < len(header) and header[value_pos] == '"':
                value, pos = _quoted(header, value_pos)
            else:
                value, pos = _token(header, value_pos)
            challenges[-1][1][word.lower()] = value
            continue
        challenges.append((word.lower(), {}))
        pos = after
    return [Challenge(scheme, params) for scheme, params in challenges]


def find_challenge(header: str | None, scheme: str) -> Challenge | None:
    """The first challenge of `scheme` (case-insensitive), if any."""
    wanted = scheme.lower()
    return next((c for c in parse_www_authenticate(header) if c.scheme == wanted), None)


def pull_scope_for_path(path: str) -> str | None:
    """`repository:<name>:pull` for a /v2/<name>/{manifests,blobs,tags,referrers}/ path, else None."""
    match = _REPOSITORY_PATH_RE.search(path)
    if match is None:
        return None
    return f"repository:{match.group('name')}:pull"
