"""Reading Clair's index and vulnerability reports (pure)."""

from __future__ import annotations

import pytest

from layerfill.consumers.scanner.reports import (
    ReportError,
    clair_error_message,
    summarize_index_report,
    summarize_vulnerability_report,
)

pytestmark = pytest.mark.unit

D = "sha256:" + "c" * 64


def test_index_report_summary() -> None:
    doc = {
        "manifest_hash": D,
        "state": "IndexFinished",
        "packages": {"1": {"name": "openssl"}, "2": {"name": "openssl"}, "3": {"name": "libc6"}},
        "success": True,
        "err": "",
    }
    s = summarize_index_report(doc)
    assert (s.state, s.final, s.package_count, s.package_names, s.error) == (
        "IndexFinished",
        True,
        3,
        frozenset({"openssl", "libc6"}),
        None,
    )


def test_index_error_keeps_clairs_message_or_says_there_was_none() -> None:
    s = summarize_index_report({"manifest_hash": D, "state": "IndexError", "err": "layer fetch failed"})
    assert s.final and s.error == "layer fetch failed" and s.package_count == 0
    s = summarize_index_report({"manifest_hash": D, "state": "IndexError"})
    assert s.error == "Clair reported IndexError without a message"


def test_intermediate_state_is_not_final() -> None:
    assert not summarize_index_report({"manifest_hash": D, "state": "FetchLayers"}).final


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "JSON object"),
        ({"manifest_hash": D}, "'state'"),
        ({"state": "IndexFinished"}, "'manifest_hash'"),
        ({"manifest_hash": D, "state": "IndexFinished", "packages": []}, "'packages'"),
        ({"manifest_hash": D, "state": "IndexFinished", "packages": {"7": {"version": "1"}}}, "package '7'"),
    ],
)
def test_malformed_index_reports_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(ReportError, match=field):
        summarize_index_report(doc)


def test_vulnerability_counts_per_normalized_severity() -> None:
    doc = {
        "vulnerabilities": {
            "1": {"name": "CVE-2024-0727", "normalized_severity": "Unknown"},
            "2": {"name": "CVE-2023-5678", "normalized_severity": "High"},
            "3": {"name": "CVE-2023-5678", "normalized_severity": "High"},  # a second affected package
            "4": {"name": "DSA-1", "normalized_severity": "Bogus"},
            "5": {"normalized_severity": "Critical"},
        }
    }
    s = summarize_vulnerability_report(doc)
    assert s.counts == {"unknown": 2, "negligible": 0, "low": 0, "medium": 0, "high": 2, "critical": 1}
    assert s.names == ("5", "CVE-2023-5678", "CVE-2024-0727", "DSA-1")
    assert s.total == 5


def test_a_clean_report_counts_zero_everywhere() -> None:
    s = summarize_vulnerability_report({"vulnerabilities": {}})
    assert s.total == 0 and set(s.counts) == {"unknown", "negligible", "low", "medium", "high", "critical"}


def test_malformed_vulnerability_report() -> None:
    with pytest.raises(ReportError, match="'vulnerabilities'"):
        summarize_vulnerability_report({"vulnerabilities": [1]})
    with pytest.raises(ReportError, match="vulnerability 'x'"):
        summarize_vulnerability_report({"vulnerabilities": {"x": "High"}})


def test_clair_error_message() -> None:
    assert clair_error_message(b'{"code":"bad-request","message":"bogus manifest"}', 400) == "HTTP 400: bogus manifest"
    assert clair_error_message(b"<html>oops</html>", 502) == "HTTP 502: <html>oops</html>"
    assert clair_error_message(b"", 503) == "HTTP 503"
