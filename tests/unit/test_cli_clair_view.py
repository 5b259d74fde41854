import pytest

from layerfill.cli.clair_view import PackageRow, VulnerabilityRow, package_rows, vulnerability_rows

pytestmark = pytest.mark.unit

BASE, APP = "sha256:" + "b" * 64, "sha256:" + "a" * 64

INDEX = {
    "state": "IndexFinished",
    "packages": {
        "1": {"id": "1", "name": "openssl", "version": "3.0.11-1~deb12u2"},
        "2": {"id": "2", "name": "base-files", "version": "12.4+deb12u5"},
        "3": {"id": "3", "name": "tool", "version": "1"},
    },
    "environments": {
        "1": [{"package_db": "var/lib/dpkg/status", "introduced_in": BASE}],
        "2": [{"introduced_in": BASE}],
        "3": [{"introduced_in": APP}, {"introduced_in": BASE}],
    },
}

REPORT = {
    "packages": {"1": {"name": "openssl", "version": "3.0.11-1~deb12u2"}, "2": {"name": "base-files"}},
    "vulnerabilities": {
        "v9": {
            "name": "CVE-2024-0727",
            "package": {"name": "openssl"},
            "fixed_in_version": "3.0.13-1~deb12u1",
            "normalized_severity": "Unknown",
            "severity": "",
        },
    },
    "package_vulnerabilities": {"1": ["v9"], "2": []},
}


def test_packages_name_the_layers_that_introduced_them() -> None:
    assert package_rows(INDEX) == [
        PackageRow("base-files", "12.4+deb12u5", (BASE,)),
        PackageRow("openssl", "3.0.11-1~deb12u2", (BASE,)),
        PackageRow("tool", "1", tuple(sorted((APP, BASE)))),
    ]


def test_vulnerabilities_with_their_installed_package() -> None:
    assert vulnerability_rows(REPORT) == [
        VulnerabilityRow("CVE-2024-0727", "openssl", "3.0.11-1~deb12u2", "3.0.13-1~deb12u1", "Unknown")
    ]


def test_empty_reports() -> None:
    assert package_rows({}) == [] and vulnerability_rows({}) == []
