"""Nothing outside layerfill/sinks/ knows a sink's type: code goes through `Sink` (base.py) and the factory, never
a concrete sink, the storage layout or the S3 client, and never asks which kind of sink a route names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("layerfill", "consumers", "producers")
# The modules that know a sink's type; the interface (base), the factory and helpers may be imported anywhere.
PRIVATE = {"distribution", "registry", "layout", "s3client"}
# Route settings are where a sink is named (config) and built (sinks).
ALLOWED_DIRS = (ROOT / "layerfill" / "sinks", ROOT / "layerfill" / "config")


def _sources() -> list[Path]:
    files = [p for d in SOURCES for p in (ROOT / d).rglob("*.py")]
    return [p for p in files if not any(p.is_relative_to(d) for d in ALLOWED_DIRS)]


def _private_sink_module(name: str | None) -> bool:
    parts = (name or "").split(".")
    return len(parts) == 3 and parts[:2] == ["layerfill", "sinks"] and parts[2] in PRIVATE


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and _private_sink_module(node.module):
            found.append(f"imports {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module == "layerfill.sinks":
            found += [f"imports layerfill.sinks.{a.name}" for a in node.names if a.name in PRIVATE]
        elif isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names if _private_sink_module(a.name)]
        elif isinstance(node, ast.Attribute) and node.attr == "sink" and "route" in ast.unparse(node.value):
            found.append(f"reads {ast.unparse(node)}")
        elif isinstance(node, ast.Compare) and any(
            isinstance(side, ast.Attribute) and side.attr == "name" and "sink" in ast.unparse(side.value)
            for side in (node.left, *node.comparators)
        ):
            found.append(f"compares {ast.unparse(node)}")
    return found


def test_no_code_outside_sinks_knows_a_sinks_type() -> None:
    files = _sources()
    assert len(files) > 50  # the scan sees the code it guards
    assert [f"{p.relative_to(ROOT)}: {v}" for p in files for v in _violations(p)] == []


def test_the_check_catches_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from layerfill.sinks.layout import blob_data_key\n"
        "import layerfill.sinks.distribution\n"
        "if route.sink == 'registry' or self.sink.name == 'registry':\n    pass\n"
    )
    assert _violations(bad) == [
        "imports layerfill.sinks.layout",
        "imports layerfill.sinks.distribution",
        "compares self.sink.name == 'registry'",
        "reads route.sink",
    ]
