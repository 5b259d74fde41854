"""The upstream access-log parser the upstream-cost tests and bench/egress.py count with."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.upstream_log import UpstreamLog, blob_bytes, blob_gets, manifest_gets, parse, tally

pytestmark = pytest.mark.unit

D = "sha256:" + "ab" * 32
LINES = f"""\
time="2026-12-02T17:40:55Z" level=info msg="response completed" go.version=go1.23 http.request.method=GET
127.0.0.1 - - [02/Dec/2026:17:40:55 +0000] "GET /v2/p/app/blobs/{D} HTTP/1.1" 200 25165824 "" "distribution/v3.1.1"
127.0.0.1 - - [02/Dec/2026:17:40:55 +0000] "GET /v2/p/app/blobs/{D} HTTP/1.1" 200 1024 "" "layerfill/0.1.0 (fetcher)"
127.0.0.1 - - [02/Dec/2026:17:40:56 +0000] "HEAD /v2/p/app/manifests/1 HTTP/1.1" 200 0 "" "Go-http-client/1.1"
127.0.0.1 - - [02/Dec/2026:17:40:56 +0000] "GET /v2/p/app/manifests/{D} HTTP/1.1" 200 527 "" "layerfill/0.1.0 (fetcher)"
127.0.0.1 - - [02/Dec/2026:17:40:57 +0000] "PUT /v2/p/app/blobs/uploads/4f1c?digest={D} HTTP/1.1" 201 0 "" "python-requests/2.32"
127.0.0.1 - - [02/Dec/2026:17:40:57 +0000] "GET /v2/other/x/blobs/{D} HTTP/1.1" 404 - "" "containers/5.0 (github.com/containers/image)"
"""


def test_parse_and_classify() -> None:
    reqs = parse(LINES.splitlines())
    assert len(reqs) == 6
    assert [r.who for r in reqs] == ["proxy", "layerfill", "proxy", "layerfill", "client", "client"]
    assert [r.kind for r in reqs] == ["blob", "blob", "manifest", "manifest", "upload", "blob"]
    assert reqs[0].repository == "p/app" and reqs[0].reference == D
    assert reqs[5].bytes == 0 and reqs[5].status == 404
    assert blob_bytes(reqs, "proxy") == 25165824
    assert [r.reference for r in manifest_gets(reqs, "layerfill")] == [D]
    assert blob_gets(reqs, "client") == []  # a 404 is no GET of the blob
    t = tally(reqs)
    assert (t[("layerfill", "GET", "blob")].count, t[("layerfill", "GET", "blob")].bytes) == (1, 1024)


def test_log_from_a_mark_and_by_repository(tmp_path: Path) -> None:
    path = tmp_path / "upstream.log"
    path.write_text(LINES)
    log = UpstreamLog(path).mark()
    with path.open("a") as f:
        f.write(
            f'127.0.0.1 - - [02/Dec/2026:17:41:00 +0000] "GET /v2/p/app/blobs/{D} HTTP/1.1" 200 7 "" "layerfill/0.1.0 (fetcher)"\n'
        )
        f.write(
            f'127.0.0.1 - - [02/Dec/2026:17:41:00 +0000] "GET /v2/q/blobs/{D} HTTP/1.1" 200 9 "" "layerfill/0.1.0 (fetcher)"\n'
        )
    assert [r.bytes for r in log.requests("p/")] == [7]
    assert len(log.requests()) == 2
