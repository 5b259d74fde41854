"""docs/architecture.md and its picture name only modules that exist, and its table of source folders and import
names is the one pyproject.toml installs (the picture's freshness: tests/integration/test_architecture_picture.py)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
DOT = ROOT / "docs" / "architecture.dot"
# A path of this repository's code: a top-level code folder, then `/`-separated names ending in `.py`.
MODULE = re.compile(r"\b(?:layerfill|consumers|producers|schemas|devstack|tests)/[\w/]*\.py\b")


def modules_named(text: str) -> set[str]:
    return set(MODULE.findall(text))


def test_every_module_the_doc_and_the_picture_name_exists() -> None:
    named = modules_named(DOC.read_text()) | modules_named(DOT.read_text())
    assert len(named) > 15  # the pattern finds the modules the doc is about
    assert sorted(m for m in named if not (ROOT / m).is_file()) == []


def test_the_state_store_parts_the_doc_names_exist() -> None:
    parts = re.search(r"one module per subject:\n?(.*?);", DOC.read_text(), re.S)
    assert parts is not None
    names = re.findall(r"`(\w+\.py)`", parts.group(1))
    assert len(names) >= 5
    assert sorted(n for n in names if not (ROOT / "layerfill" / "state" / n).is_file()) == []


def test_the_flow_is_in_the_picture_in_order() -> None:
    steps = ["decode", "route", "resolve", "plan", "fetch", "sink", "emit", "commit"]
    dot = DOT.read_text()
    assert "route -> resolve -> plan -> fetch -> sink;" in dot
    assert "decode -> route;" in dot and "sink -> emit -> commit;" in dot
    assert all(re.search(rf"^\s*{s} \[label=", dot, re.M) for s in steps)


def test_the_import_name_table_is_pyprojects() -> None:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    table = dict(re.findall(r"^\| `(\w+)/` \| `([\w.]+)` \|$", DOC.read_text(), re.M))
    assert table == {folder: name for name, folder in mapping.items()}


def test_the_check_finds_a_module_that_does_not_exist() -> None:
    assert modules_named("see `layerfill/kafka/nowhere.py` and layerfill/oci/walk.py.") == {
        "layerfill/kafka/nowhere.py",
        "layerfill/oci/walk.py",
    }
    assert not (ROOT / "layerfill/kafka/nowhere.py").is_file()
