"""docs/img/architecture.svg is what graphviz renders from docs/architecture.dot today: a change to the source
without a new picture fails here. graphviz is the Debian package `layerfill devstack up` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOT = ROOT / "docs" / "architecture.dot"
SVG = ROOT / "docs" / "img" / "architecture.svg"
RENDER = "dot -Tsvg docs/architecture.dot -o docs/img/architecture.svg"


def _render(source: str) -> str:
    dot = shutil.which("dot")
    assert dot is not None, "graphviz is missing: `layerfill devstack up` installs it (Debian package graphviz)"
    return subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True, check=True).stdout


def _drawing(svg: str) -> str:
    """The SVG without its comments (they name the graphviz version that rendered it)."""
    return re.sub(r"<!--.*?-->", "", svg, flags=re.S)


def test_the_committed_picture_is_the_rendered_source() -> None:
    assert _drawing(_render(DOT.read_text())) == _drawing(SVG.read_text()), f"stale picture: run {RENDER}"


def test_a_changed_source_changes_the_picture() -> None:
    changed = DOT.read_text().replace('label="sink\\n', 'label="storage\\n', 1)
    assert changed != DOT.read_text()
    assert _drawing(_render(changed)) != _drawing(SVG.read_text())
