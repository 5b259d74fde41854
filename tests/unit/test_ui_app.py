"""The status page's app against a StateStore on SQLite: what each page shows, and its read-only surface.
(In a browser, against the real pipeline: tests/e2e/test_status_page.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from layerfill.config.settings import Settings
from layerfill.ops.deadletters import DeadLetter
from layerfill.state import StateStore
from layerfill.state.records import BlobKind, BlobRecord
from layerfill.ui.app import DeadLetterSample, create_app
from layerfill.ui.views import causes, human_bytes, image_path, parse_image_path, platform_of_config

pytestmark = pytest.mark.unit

REG = "cache.example:5000"
INDEX, AMD, ARM, SINGLE = ("sha256:" + c * 64 for c in "1234")
CFG_AMD, CFG_ARM, CFG_SINGLE, LAYER = ("sha256:" + c * 64 for c in "abcd")
PLATFORMS = {CFG_AMD: "linux/amd64", CFG_ARM: "linux/arm64/v8", CFG_SINGLE: "linux/amd64"}


def blob(digest: str, kind: str, manifest: str, size: int = 1000) -> BlobRecord:
    return BlobRecord(digest, size, None, BlobKind(kind), manifest, "fetched")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.mark_filling(REG, "library/multi", INDEX, event_id="e1", reference="1")
    store.mark_complete(REG, "library/multi", INDEX, total_bytes=5 * 1024 * 1024, fetched_bytes=1024, blobs=[
        blob(AMD, "manifest", INDEX), blob(ARM, "manifest", INDEX), blob(CFG_AMD, "config", AMD),
        blob(CFG_ARM, "config", ARM), blob(LAYER, "layer", AMD), blob(LAYER, "layer", ARM),
    ])  # fmt: skip
    store.mark_filling(REG, "library/app", SINGLE, event_id="e2", reference="2")
    store.mark_partial(REG, "library/app", SINGLE, missing=[LAYER], total_bytes=2048, fetched_bytes=0)
    store.record_scan(REG, "library/multi", AMD, scanner="clair", state="indexed", package_count=4,
                      vulnerabilities={"high": 2, "unknown": 1}, report_uri="http://clair/report")  # fmt: skip
    store.record_scan(REG, "library/multi", ARM, scanner="clair", state="index_error", error="layer fetch failed")
    letters = [
        DeadLetter(
            "dlq",
            0,
            1,
            10,
            None,
            b"",
            (),
            {"error.class": "NoRoute", "error.message": "no route for x", "stage": "fetcher"},
            "ManifestPulled",
            {"repository": "other/app"},
        ),
        DeadLetter("dlq", 0, 2, 20, None, b"", (), {"error.class": "NoRoute", "error.message": "no route for y"}),
        DeadLetter("dlq", 1, 0, 15, None, b"", (), {"error.class": "InvalidEvent", "error.message": "bad <name>"}),
    ]
    app = create_app(Settings(), store=store, platform_for=PLATFORMS.get,
                     dead_letters=lambda: DeadLetterSample(causes(letters), len(letters)))  # fmt: skip
    with TestClient(app) as c:
        yield c
    store.close()


def test_index_lists_images_with_status_platforms_bytes_and_scans(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'data-repository="library/multi"' in html and 'data-status="complete"' in html
    assert 'data-repository="library/app"' in html and 'data-status="partial"' in html
    assert '<span class="platform">linux/amd64</span><span class="platform">linux/arm64/v8</span>' in html
    assert 'data-bytes="5242880">5.0 MiB' in html
    assert 'data-severity="high" data-count="2"' in html
    assert ">index_error 1/2</span>" in html and ">indexed 1/2</span>" in html  # the index's two platforms
    assert 'data-state="indexed" data-count="1"' in html and 'data-state="index_error" data-count="1"' in html
    assert (
        'data-error-class="NoRoute" data-count="2"' in html and 'data-error-class="InvalidEvent" data-count="1"' in html
    )
    assert "bad &lt;name&gt;" in html  # escaped, never markup
    assert f'href="{image_path(REG, "library/multi", INDEX)}"' in html
    assert "<script" not in html


def test_filter_by_status_and_prefix(client: TestClient) -> None:
    html = client.get("/?status=partial").text
    assert 'data-repository="library/app"' in html and 'data-repository="library/multi"' not in html
    html = client.get("/?repository=library/m").text
    assert 'data-repository="library/multi"' in html and 'data-repository="library/app"' not in html
    assert client.get("/?status=nonsense").status_code == 400


def test_image_page_shows_each_manifest_and_blob(client: TestClient) -> None:
    html = client.get(image_path(REG, "library/multi", INDEX)).text
    assert f'data-digest="{AMD}" data-platform="linux/amd64" data-scan-state="indexed"' in html
    assert f'data-digest="{ARM}" data-platform="linux/arm64/v8" data-scan-state="index_error"' in html
    assert "layer fetch failed" in html
    assert html.count('class="blob"') == 6


def test_unknown_or_malformed_image_is_404(client: TestClient) -> None:
    assert client.get(image_path(REG, "library/none", INDEX)).status_code == 404
    assert client.get("/image/not-a-path").status_code == 404
    assert client.get(f"/image/{REG}/Bad_Name@{INDEX}").status_code == 404


def test_read_only(client: TestClient) -> None:
    assert client.post("/").status_code == 405
    assert client.get("/healthz").text == "ok"


def test_views_helpers() -> None:
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(None) == "-"
    assert platform_of_config(b'{"os": "linux", "architecture": "arm64", "variant": "v8"}') == "linux/arm64/v8"
    assert platform_of_config(b"not json") is None and platform_of_config(b'{"os": 1}') is None
    assert parse_image_path(f"{REG}/a/b@{INDEX}") == (REG, "a/b", INDEX)
    with pytest.raises(ValueError):
        parse_image_path("registry-only")
