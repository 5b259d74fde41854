"""The migration environment itself: packaging, revision chain, the template, the developer CLI path.
That models and migrations agree is checked in test_state_store.py (on SQLite and PostgreSQL)."""

from __future__ import annotations

import ast
import fnmatch
import shutil
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from alembic import command
from alembic.config import main as alembic_main
from alembic.script import ScriptDirectory

from layerfill.state import current_revision, head_revision, schema_diff
from layerfill.state.migrate import MIGRATIONS_DIR, alembic_config

pytestmark = pytest.mark.unit

STATE_DIR = MIGRATIONS_DIR.parent
REPO_ROOT = STATE_DIR.parents[1]


def test_one_linear_history_starting_at_0001() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].revision == "0001" and revisions[-1].down_revision is None
    for rev in revisions:
        assert rev.path is not None and Path(rev.path).name.startswith(f"{rev.revision}_")
        assert rev.module.downgrade is not None


def _glob_match(rel: PurePosixPath, pattern: str) -> bool:
    # setuptools' package-data globs do not cross directories: match part by part.
    parts = PurePosixPath(pattern).parts
    return len(parts) == len(rel.parts) and all(fnmatch.fnmatch(a, b) for a, b in zip(rel.parts, parts, strict=True))


def test_every_migration_file_ships_in_the_wheel() -> None:
    """No alembic.ini is needed at run time, but env.py, the template and every revision must be installed."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    patterns = setuptools["package-data"]["layerfill.state"]
    packages = set(setuptools["packages"])
    for path in sorted(STATE_DIR.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        rel = PurePosixPath(path.relative_to(STATE_DIR).as_posix())
        package = ".".join(["layerfill", "state", *rel.parts[:-1]])
        shipped = (path.suffix == ".py" and package in packages) or any(_glob_match(rel, p) for p in patterns)
        assert shipped, f"{rel} would be missing from the wheel: add it to package-data of layerfill.state"


def test_revision_template_renders_valid_python(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    config = alembic_config()
    config.set_main_option("script_location", str(scripts))
    command.revision(config, message="add a column", rev_id="0999")
    (new,) = (scripts / "versions").glob("0999_*.py")
    tree = ast.parse(new.read_text())
    assigned = {
        node.target.id: ast.literal_eval(node.value)  # type: ignore[arg-type]
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None
    }
    assert assigned["revision"] == "0999" and assigned["down_revision"] == head_revision()
    assert {"upgrade", "downgrade"} <= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_developer_cli_with_the_shipped_ini(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dev.db'}"
    alembic_main(["-c", str(STATE_DIR / "alembic.ini"), "-x", f"url={url}", "upgrade", "head"])
    assert current_revision(url) == head_revision()
    assert schema_diff(url) == []
    alembic_main(["-c", str(STATE_DIR / "alembic.ini"), "-x", f"url={url}", "downgrade", "base"])
    assert current_revision(url) is None
