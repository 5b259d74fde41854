"""`layerfill status`: the per-image view of completeness and scans (pure parts), and the command on a real
SQLite state DB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layerfill.cli.main import app
from layerfill.cli.status import format_vulnerabilities, image_manifests, image_view, scan_summary
from layerfill.state import BlobKind, BlobOutcome, BlobRecord, ImageStatus, ScanState, StateStore
from layerfill.state.records import ImageBlobRow, ImageRow, ScanRow

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
INDEX = "sha256:" + "0" * 64
AMD = "sha256:" + "1" * 64
ARM = "sha256:" + "2" * 64
CFG1 = "sha256:" + "3" * 64
CFG2 = "sha256:" + "4" * 64
BASE = "sha256:" + "5" * 64
COUNTS = {"unknown": 1, "negligible": 0, "low": 0, "medium": 0, "high": 2, "critical": 0}


def image(digest: str = AMD, status: ImageStatus = ImageStatus.COMPLETE) -> ImageRow:
    return ImageRow(1, "reg:5000", "demo/app", digest, None, "1", status, 10, 5, 3, NOW, NOW, NOW, NOW, None, 1, None)


def scan(digest: str, state: ScanState = ScanState.INDEXED) -> ScanRow:
    vulns = COUNTS if state is ScanState.INDEXED else None
    packages = 4 if state is ScanState.INDEXED else None
    return ScanRow("reg:5000", "demo/app", digest, "clair", "s1", state, packages, vulns, None, None, 1, NOW, NOW)


def blob(digest: str, kind: BlobKind, manifest: str) -> ImageBlobRow:
    return ImageBlobRow(digest, 1, None, kind, manifest, BlobOutcome.LINKED)


def test_image_manifests_are_the_children_of_an_index() -> None:
    blobs = [blob(CFG1, BlobKind.CONFIG, AMD), blob(BASE, BlobKind.LAYER, AMD), blob(CFG2, BlobKind.CONFIG, ARM),
             blob(BASE, BlobKind.LAYER, ARM), blob(AMD, BlobKind.MANIFEST, INDEX)]  # fmt: skip
    assert image_manifests(image(INDEX), blobs) == [AMD, ARM]
    assert image_manifests(image(AMD), [blob(CFG1, BlobKind.CONFIG, AMD)]) == [AMD]
    # Not complete yet: no blobs recorded, the image's own digest stands for itself.
    assert image_manifests(image(AMD, ImageStatus.FILLING), []) == [AMD]


def test_scan_summary() -> None:
    assert scan_summary([scan(AMD), scan(ARM)]) == "indexed"
    assert scan_summary([None]) == "not scanned"
    assert scan_summary([scan(AMD), None]) == "indexed 1/2, not scanned 1/2"


def test_format_vulnerabilities() -> None:
    assert format_vulnerabilities(COUNTS) == "high 2, unknown 1"
    assert format_vulnerabilities(dict.fromkeys(COUNTS, 0)) == "none"
    assert format_vulnerabilities(None) == "-"


def test_image_view() -> None:
    view = image_view(image(INDEX, ImageStatus.PARTIAL), [(AMD, scan(AMD)), (ARM, None)])
    assert view["complete"] is False and view["status"] == "partial"
    assert view["scan"] == "indexed 1/2, not scanned 1/2"
    assert view["manifests"][0]["packages"] == 4 and view["manifests"][0]["vulnerabilities"] == COUNTS
    assert view["manifests"][1] == {"digest": ARM, "scan_state": None, "packages": None, "vulnerabilities": None,
                                    "error": None}  # fmt: skip


def test_status_command_on_a_state_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with StateStore(url) as store:
        store.mark_complete("reg:5000", "demo/app-b", AMD, total_bytes=10, fetched_bytes=5, event_id="e1",
                            blobs=[BlobRecord(CFG1, 1, None, "config", AMD, "fetched"),
                                   BlobRecord(BASE, 1, None, "layer", AMD, "linked")])  # fmt: skip
        store.record_scan("reg:5000", "demo/app-b", AMD, scanner="clair", state="indexed", package_count=4,
                          vulnerabilities=COUNTS)  # fmt: skip
        store.mark_filling("reg:5000", "demo/app-c", ARM, event_id="e2")
    monkeypatch.setenv("LAYERFILL_STATE__DATABASE_URL", url)
    monkeypatch.setenv("LAYERFILL_ENV_FILE", "none")
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    views = {v["repository"]: v for v in doc["images"]}
    assert views["demo/app-b"]["complete"] is True and views["demo/app-b"]["scan"] == "indexed"
    assert views["demo/app-b"]["manifests"][0]["packages"] == 4
    assert views["demo/app-c"]["complete"] is False and views["demo/app-c"]["scan"] == "not scanned"
    assert doc["totals"]["scans"]["indexed"] == 1
    table = CliRunner().invoke(app, ["status", "--repository", "demo/app-b"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "demo/app-b" in table.output and "demo/app-c" not in table.output
    assert "high 2, unknown 1" in table.output and "indexed" in table.output
