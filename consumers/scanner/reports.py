"""Reading Clair's answers (pure): an index report's state and packages, a vulnerability report's counts per
normalized severity. Malformed answers raise ReportError naming the bad field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layerfill.serde.events import vulnerability_counts

INDEX_FINISHED = "IndexFinished"
INDEX_ERROR = "IndexError"
FINAL_STATES = frozenset({INDEX_FINISHED, INDEX_ERROR})

# Clair's normalized severity scale -> the VulnerabilityCounts fields of ImageScanned.
SEVERITIES = ("unknown", "negligible", "low", "medium", "high", "critical")


class ReportError(ValueError):
    """Clair answered with JSON that is not a report of the expected shape."""

    transient = True  # a ValueError, but a garbled answer is Clair's fault, not the event's


@dataclass(frozen=True)
class IndexSummary:
    manifest_hash: str
    state: str  # IndexFinished, IndexError, or an intermediate state while Clair is still working
    package_count: int
    package_names: frozenset[str]
    error: str | None  # Clair's `err` when the state is IndexError

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class VulnerabilitySummary:
    counts: dict[str, int]  # every severity of SEVERITIES, zeros included
    names: tuple[str, ...]  # e.g. CVE ids, sorted, each once

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _mapping(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ReportError(f"report field {name!r} must be an object, got {type(value).__name__}")
    return value


def summarize_index_report(doc: object) -> IndexSummary:
    if not isinstance(doc, Mapping):
        raise ReportError(f"index report must be a JSON object, got {type(doc).__name__}")
    state = doc.get("state")
    if not isinstance(state, str) or not state:
        raise ReportError(f"index report field 'state' must be a non-empty string, got {state!r}")
    manifest_hash = doc.get("manifest_hash")
    if not isinstance(manifest_hash, str):
        raise ReportError(f"index report field 'manifest_hash' must be a string, got {manifest_hash!r}")
    packages = _mapping(doc, "packages")
    names = set()
    for key, pkg in packages.items():
        if not isinstance(pkg, Mapping) or not isinstance(pkg.get("name"), str):
            raise ReportError(f"index report package {key!r} has no 'name'")
        names.add(pkg["name"])
    err = doc.get("err")
    error = err if isinstance(err, str) and err else None
    if state == INDEX_ERROR and error is None:
        error = "Clair reported IndexError without a message"
    return IndexSummary(manifest_hash, state, len(packages), frozenset(names), error)


def summarize_vulnerability_report(doc: object) -> VulnerabilitySummary:
    """Counts of the report's vulnerability records (each affects a package of the image) per normalized
    severity; a severity outside Clair's scale counts as unknown."""
    if not isinstance(doc, Mapping):
        raise ReportError(f"vulnerability report must be a JSON object, got {type(doc).__name__}")
    counts = dict.fromkeys(SEVERITIES, 0)
    names: set[str] = set()
    for key, vuln in _mapping(doc, "vulnerabilities").items():
        if not isinstance(vuln, Mapping):
            raise ReportError(f"vulnerability {key!r} must be an object")
        severity = str(vuln.get("normalized_severity") or "unknown").lower()
        counts[severity if severity in counts else "unknown"] += 1
        name = vuln.get("name")
        names.add(name if isinstance(name, str) and name else str(key))
    return VulnerabilitySummary(vulnerability_counts(**counts), tuple(sorted(names)))


def clair_error_message(body: bytes, status: int) -> str:
    """Clair's error answers are `{"code": .., "message": ..}`; anything else is quoted (shortened)."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    if isinstance(doc, Mapping) and isinstance(doc.get("message"), str):
        return f"HTTP {status}: {doc['message']}"[:2000]
    text = body[:500].decode("utf-8", errors="replace").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"
