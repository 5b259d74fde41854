"""The status page (`layerfill run ui`) in headless Chromium, against a state DB and DLQ the real pipeline filled:
images pulled through the proxy cache and completed by the fetcher (one of them a multi-arch index), a dead
letter the fetcher wrote for an event no route covers, and a scan recorded through the StateStore as the scanner
records it. The page's elements are asserted in the DOM Chromium built; a screenshot is kept under
.ci-artifacts/ (LAYERFILL_CI_ARTIFACTS) for CI."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from layerfill.devstack.seed import seed
from layerfill.state import StateStore
from tests.support.browser import Element, dump_dom, parse, screenshot
from tests.support.clients import skopeo_pull
from tests.support.notifications import fake_digest
from tests.support.pipeline import free_port
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("LAYERFILL_CI_ARTIFACTS", Path(__file__).resolve().parents[2] / ".ci-artifacts"))
NAMES = ["demo/app-a:1", "demo/app-b:1", "demo/multi:1"]


def _routes(devstack: DevStack, prefix: str) -> list[dict]:
    return [{"registry": devstack.proxy_registry, "repository_prefix": prefix, "strip_prefix": False,
             "upstream_url": f"http://{devstack.upstream_registry}", "sink": "distribution",
             "proxy_url": f"http://{devstack.proxy_registry}"}]  # fmt: skip


def _texts(el: Element, tag: str, **attrs: str) -> list[str]:
    return [e.all_text for e in el.find_all(tag, **attrs)]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_status_page_in_a_browser(devstack: DevStack, catalog, pipeline_factory, tmp_path: Path) -> None:
    prefix = unique("ui")
    pushed = seed(devstack.ctx, large_size=0, prefix=prefix, names=NAMES)
    repo = {n.split(":")[0].rsplit("/", 1)[1]: f"{prefix}/{n.split(':')[0]}" for n in NAMES}
    digest = {name: pushed[f"{r}:1"] for name, r in repo.items()}
    p = pipeline_factory(routes=_routes(devstack, prefix))
    p.start("bridge")
    p.start("fetcher")
    for name in ("app-a", "app-b", "multi"):  # B's base layer is skipped: the client has it from A
        res = skopeo_pull(devstack.proxy_registry, repo[name], "1", tmp_path / "client", tag=name)
        assert res.returncode == 0, res.stderr
    p.read(p.topics.image_cached.name, timeout=240,
           until=lambda rs: {r["digest"] for r in rs} >= set(digest.values()))  # fmt: skip
    # A dead letter through the fetcher: an event for a registry no route covers.
    p.publish(
        registry="unrouted.example:5000", repository=f"{prefix}/nowhere", digest=fake_digest(prefix), source="cli"
    )
    p.read(p.topics.dlq.name, raw=True, until=lambda rs: len(rs) >= 1)
    with StateStore(p.state_url) as store:
        store.record_scan(devstack.proxy_registry, repo["app-b"], digest["app-b"], scanner="clair",
                          scanner_version="v4.9.0", state="indexed", package_count=4,
                          vulnerabilities={"unknown": 1}, report_uri="http://127.0.0.1:1/report")  # fmt: skip
        total_b = store.image_status(devstack.proxy_registry, repo["app-b"], digest["app-b"]).total_bytes  # type: ignore[union-attr]

    port = free_port()
    p.health_ports["ui"] = port
    p.start("ui", env={"LAYERFILL_UI__PORT": str(port)})
    base = f"http://127.0.0.1:{port}"

    page = parse(dump_dom(f"{base}/?repository={prefix}"))
    found = page.find("table", id="images").find_all("tr", class_="image")
    rows = {r.attrs["data-digest"]: r for r in found}
    for name in ("app-a", "app-b", "multi"):
        assert rows[digest[name]].attrs["data-repository"] == repo[name]
        assert rows[digest[name]].attrs["data-status"] == "complete"
    # Besides: the unrouted event's image (the fetcher recorded it as failed when it dead-lettered it), and the
    # amd64 child of the index, which the client pulled by digest (a pull event of its own).
    others = {(r.attrs["data-repository"], r.attrs["data-status"]) for d, r in rows.items() if d not in digest.values()}
    assert others == {(f"{prefix}/nowhere", "failed"), (repo["multi"], "complete")}
    assert _texts(rows[digest["multi"]], "span", class_="platform") == ["linux/amd64", "linux/arm64/v8"]
    b = rows[digest["app-b"]]
    assert _texts(b, "span", class_="platform") == ["linux/amd64"]
    assert b.find("td", class_="bytes").attrs["data-bytes"] == str(total_b) and total_b > 0
    assert b.find("td", class_="packages").all_text == "4"
    assert [(s.attrs["data-severity"], s.attrs["data-count"]) for s in b.find_all("span", class_="sev")] == [
        ("unknown", "1")
    ]
    scans = {r.attrs["data-state"]: int(r.attrs["data-count"]) for r in page.find_all("tr", class_="scan-state")}
    # Not scanned: a, the index's two platforms, its pulled child, the unrouted image.
    assert scans == {"indexed": 1, "not scanned": 5}
    causes = {
        r.attrs["data-error-class"]: r for r in page.find("table", id="dead-letters").find_all("tr", class_="cause")
    }
    assert list(causes) == ["NoRoute"] and causes["NoRoute"].attrs["data-count"] == "1"
    assert f"{prefix}/nowhere" in causes["NoRoute"].all_text

    link = rows[digest["multi"]].find("a", class_="image-link").attrs["href"]
    detail = parse(dump_dom(base + link))
    manifests = detail.find("table", id="manifests").find_all("tr", class_="manifest")
    assert sorted(m.attrs["data-platform"] for m in manifests) == ["linux/amd64", "linux/arm64/v8"]
    assert {m.attrs["data-scan-state"] for m in manifests} == {"not scanned"}
    assert {b.attrs["data-kind"] for b in detail.find_all("tr", class_="blob")} == {"manifest", "config", "layer"}

    shot = screenshot(f"{base}/?repository={prefix}", ARTIFACTS / "status-page.png")
    assert _png_size(shot) == (1400, 1000) and shot.stat().st_size > 20_000
