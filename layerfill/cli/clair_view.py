"""Rows of Clair's reports as `make demo` prints them: each package with the layer that introduced it, and each
vulnerability with its package. Pure: Clair's index and vulnerability report documents in, tuples out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PackageRow:
    name: str
    version: str
    layers: tuple[str, ...]  # digests of the layers that introduced it


@dataclass(frozen=True)
class VulnerabilityRow:
    name: str
    package: str
    installed: str
    fixed_in: str
    severity: str


def package_rows(index: dict[str, Any]) -> list[PackageRow]:
    envs = index.get("environments") or {}
    rows = []
    for pid, pkg in (index.get("packages") or {}).items():
        layers = tuple(sorted({e.get("introduced_in", "") for e in envs.get(pid, []) if e.get("introduced_in")}))
        rows.append(PackageRow(pkg.get("name", "?"), pkg.get("version", "?"), layers))
    return sorted(rows, key=lambda r: r.name)


def vulnerability_rows(report: dict[str, Any]) -> list[VulnerabilityRow]:
    vulns = report.get("vulnerabilities") or {}
    packages = report.get("packages") or {}
    rows = []
    for pid, ids in (report.get("package_vulnerabilities") or {}).items():
        installed = packages.get(pid, {})
        for vid in ids:
            v = vulns.get(vid, {})
            rows.append(
                VulnerabilityRow(
                    v.get("name", vid),
                    installed.get("name") or (v.get("package") or {}).get("name", "?"),
                    installed.get("version", "?"),
                    v.get("fixed_in_version") or "-",
                    (v.get("normalized_severity") or v.get("severity") or "Unknown"),
                )
            )
    return sorted(rows, key=lambda r: (r.package, r.name))
