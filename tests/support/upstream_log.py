"""Who asked the upstream registry for what: its own access log, counted by user agent, method and path kind.

distribution writes one Apache combined-format line per request to its log (the devstack's
`.devstack/logs/upstream.log`), with the User-Agent each requester sent:
  127.0.0.1 - - [02/Dec/2026:17:40:55 +0000] "GET /v2/p/demo/x/blobs/sha256:.. HTTP/1.1" 200 25165824 "" "UA"
layerfill's fetcher sends `layerfill/<version> (fetcher)`; the proxy cache its own (`distribution/...`, or Go's
default), and clients theirs (skopeo: `containers/...`). Requests are told apart by their repository, so tests
sharing the upstream count only their own (`repository_prefix`)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(
    r'^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r' "[^"]*" "(?P<agent>[^"]*)"'
)
_API = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/?]+)")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    bytes: int
    agent: str

    @property
    def kind(self) -> str:
        """manifest, blob, upload (a push), tags, or other."""
        m = _API.match(self.path)
        if m is None:
            return "upload" if "/blobs/uploads/" in self.path else "other"
        if m.group("name").endswith("/blobs") or m.group("ref") == "uploads":
            return "upload"
        return {"manifests": "manifest", "blobs": "blob", "tags": "tags"}[m.group("kind")]

    @property
    def repository(self) -> str | None:
        m = _API.match(self.path)
        return m.group("name") if m else None

    @property
    def reference(self) -> str | None:
        m = _API.match(self.path)
        return m.group("ref") if m else None

    @property
    def who(self) -> str:
        """layerfill, proxy (the cache registry) or client (anyone else: pushes, direct pulls)."""
        agent = self.agent.lower()
        if agent.startswith("layerfill/"):
            return "layerfill"
        if agent.startswith(("distribution/", "docker-distribution/", "go-http-client/")):
            return "proxy"
        return "client"


def parse(lines: Iterable[str]) -> list[Request]:
    out = []
    for line in lines:
        m = _LINE.search(line)
        if m:
            size = m.group("bytes")
            out.append(Request(m.group("method"), m.group("path"), int(m.group("status")),
                               0 if size == "-" else int(size), m.group("agent")))  # fmt: skip
    return out


class UpstreamLog:
    """The upstream's access log from a mark on: `mark()` before the scenario, `requests(...)` after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> UpstreamLog:
        self._offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def requests(self, repository_prefix: str | None = None) -> list[Request]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode("utf-8", errors="replace")
        reqs = parse(text.splitlines())
        if repository_prefix is None:
            return reqs
        return [r for r in reqs if (r.repository or "").startswith(repository_prefix)]


@dataclass(frozen=True)
class Tally:
    count: int
    bytes: int


def tally(requests: Iterable[Request]) -> dict[tuple[str, str, str], Tally]:
    """(who, method, kind) -> requests and response bytes."""
    counts: Counter[tuple[str, str, str]] = Counter()
    sizes: Counter[tuple[str, str, str]] = Counter()
    for r in requests:
        key = (r.who, r.method, r.kind)
        counts[key] += 1
        sizes[key] += r.bytes
    return {k: Tally(counts[k], sizes[k]) for k in counts}


def blob_gets(requests: Iterable[Request], who: str, digest: str | None = None) -> list[Request]:
    """Successful blob GETs (200/206) by `who`, of `digest` if given."""
    return [r for r in requests if r.who == who and r.method == "GET" and r.kind == "blob" and r.status in (200, 206)
            and (digest is None or r.reference == digest)]  # fmt: skip


def manifest_gets(requests: Iterable[Request], who: str) -> list[Request]:
    return [r for r in requests if r.who == who and r.method == "GET" and r.kind == "manifest"]


def blob_bytes(requests: Iterable[Request], who: str) -> int:
    return sum(r.bytes for r in blob_gets(requests, who))
