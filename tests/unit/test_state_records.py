from __future__ import annotations

from datetime import UTC, datetime

import pytest

from layerfill.oci.reference import InvalidReference
from layerfill.state import BlobKind, BlobOutcome, BlobRecord, ImageRow, ImageStatus, ScanState
from layerfill.state.records import check_count, check_text, check_vulnerabilities, coerce_enum

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha512:" + "2" * 128


def test_blob_record_coerces_enum_strings() -> None:
    record = BlobRecord(D1, 10, "application/vnd.oci.image.layer.v1.tar+gzip", "layer", D2, "linked")
    assert record.kind is BlobKind.LAYER and record.outcome is BlobOutcome.LINKED
    assert BlobRecord(D1, 0, None, BlobKind.MANIFEST, D1, BlobOutcome.PRESENT).kind is BlobKind.MANIFEST


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"digest": "sha256:xyz"}, InvalidReference, "invalid blob.digest"),
        ({"manifest_digest": "latest"}, InvalidReference, "invalid blob.manifest_digest"),
        ({"size": -1}, ValueError, "invalid blob.size -1: must not be negative"),
        ({"size": True}, ValueError, "invalid blob.size True: must be an integer"),
        ({"size": 1.5}, ValueError, "invalid blob.size 1.5: must be an integer"),
        ({"media_type": ""}, ValueError, "invalid blob.media_type: must not be empty"),
        ({"media_type": "x" * 256}, ValueError, "invalid blob.media_type: longer than 255"),
        ({"kind": "blob"}, ValueError, "invalid blob.kind 'blob': must be one of manifest, config, layer"),
        ({"outcome": "skipped"}, ValueError, "invalid blob.outcome 'skipped': must be one of fetched, linked, present"),
    ],
)
def test_blob_record_names_the_bad_field(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    fields: dict[str, object] = {
        "digest": D1,
        "size": 1,
        "media_type": None,
        "kind": "layer",
        "manifest_digest": D2,
        "outcome": "fetched",
        **kwargs,
    }
    with pytest.raises(error, match=match):
        BlobRecord(**fields)  # type: ignore[arg-type]


def test_coerce_enum() -> None:
    assert coerce_enum(ScanState, "index_error", "state") is ScanState.INDEX_ERROR
    assert coerce_enum(ScanState, ScanState.INDEXED, "state") is ScanState.INDEXED
    with pytest.raises(ValueError, match="invalid state 'INDEXED'"):
        coerce_enum(ScanState, "INDEXED", "state")


def test_text_and_count_checks() -> None:
    assert check_text("abc", "f", max_length=3) == "abc"
    with pytest.raises(ValueError, match="invalid f: longer than 2 characters"):
        check_text("abc", "f", max_length=2)
    with pytest.raises(ValueError, match="invalid f 3: must be a string"):
        check_text(3, "f")
    assert check_count(0, "n") == 0
    with pytest.raises(ValueError, match="invalid n '1': must be an integer"):
        check_count("1", "n")


def test_vulnerabilities_check() -> None:
    assert check_vulnerabilities(None) is None
    assert check_vulnerabilities({"Critical": 0, "High": 3}) == {"Critical": 0, "High": 3}
    with pytest.raises(ValueError, match="must be a mapping"):
        check_vulnerabilities([("High", 1)])
    with pytest.raises(ValueError, match=r"invalid vulnerabilities\['High'\] 'many'"):
        check_vulnerabilities({"High": "many"})
    with pytest.raises(ValueError, match="invalid vulnerabilities key 7"):
        check_vulnerabilities({7: 1})


def test_image_row_is_complete_follows_status() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    row = ImageRow(1, "r.io", "a/b", D1, None, None, ImageStatus.COMPLETE, 0, 0, 0, now, now, now, now, None, 1, "e")
    assert row.is_complete
    assert not ImageRow(
        1, "r.io", "a/b", D1, None, None, ImageStatus.PARTIAL, 0, 0, 0, now, now, None, now, "x", 1, "e"
    ).is_complete
