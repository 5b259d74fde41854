"""The fault suite (issue: reliability under faults, load and hostile input). Runs in CI at a smaller scale;
`LAYERFILL_FAULTS_FULL=1` (or `make faults-full`) runs the long random runs at the counts docs/reliability.md reports."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import pipeline_factory, upstream_stopped  # noqa: F401  (shared fixtures)


def full_run() -> bool:
    return os.environ.get("LAYERFILL_FAULTS_FULL", "") not in ("", "0", "false")


def scaled(ci: int, full: int) -> int:
    """A count for a long random run: `ci` in CI, `full` with LAYERFILL_FAULTS_FULL=1."""
    return full if full_run() else ci


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.faults)
