"""CLI polish without services: clean flag rendering, examples in --help, --version, the progress bar's ETA,
and how `dlq list --limit` picks what to read."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from rich.console import Console
from rich.progress import TimeRemainingColumn
from typer.testing import CliRunner

from layerfill.cli.main import app
from layerfill.cli.progress import bar
from layerfill.ops.deadletters import DeadLetter, newest, windows_back

pytestmark = pytest.mark.unit

runner = CliRunner()
HELP_ENV = {"COLUMNS": "140", "TERM": "dumb"}


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["backfill"], ["--dry-run", "--restart", "--json"]),
        (["verify"], ["--deep", "--repair", "--all"]),
        (["replay"], ["--dry-run", "--execute", "--to-earliest"]),
        (["dlq", "list"], ["--json", "--limit"]),
        (["dlq", "replay"], ["--dry-run", "--all"]),
        (["status"], ["--json"]),
        (["devstack", "up"], ["--install"]),
    ],
)
def test_flags_take_no_value_in_help(argv: list[str], flags: list[str]) -> None:
    res = runner.invoke(app, [*argv, "--help"], env=HELP_ENV)
    assert res.exit_code == 0, res.output
    assert "<bool>" not in res.output
    assert "<list[" not in res.output
    for flag in flags:
        assert flag in res.output


def test_repeatable_options_show_their_item_type() -> None:
    res = runner.invoke(app, ["backfill", "--help"], env=HELP_ENV)
    line = next(ln for ln in res.output.splitlines() if ln.lstrip("│ ").startswith("--repository"))
    assert "<str>" in line and "repeatable" in line


@pytest.mark.parametrize(
    ("argv", "example"),
    [
        (["backfill"], "layerfill backfill --dry-run --prefix library/"),
        (["verify"], "layerfill verify --repair --registry cache.example.com"),
        (["status"], "layerfill status --repository library/ --limit 20"),
        (["dlq", "list"], "layerfill dlq list --limit 20"),
        (["replay"], "layerfill replay --to-earliest -p 3 --execute"),
        (["publish"], "layerfill publish cache.example.com/library/debian:12 --digest"),
        ([], "layerfill --debug run fetcher"),
    ],
)
def test_help_has_examples(argv: list[str], example: str) -> None:
    res = runner.invoke(app, [*argv, "--help"], env=HELP_ENV)
    assert res.exit_code == 0
    assert example in " ".join(res.output.split())


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"layerfill {version('layerfill')}"


def test_dlq_list_limit_must_be_positive() -> None:
    res = runner.invoke(app, ["dlq", "list", "--limit", "0"])
    assert res.exit_code == 2
    assert "--limit" in res.output


def test_progress_bar_shows_count_and_eta() -> None:
    console = Console(record=True, force_terminal=True, width=120)
    progress = bar("verify", console)
    assert any(isinstance(c, TimeRemainingColumn) for c in progress.columns)
    task = progress.add_task("repo@sha256:abc", total=40)
    progress.advance(task, 12)
    console.print(progress.make_tasks_table(progress.tasks))
    text = console.export_text()
    assert "verify" in text and "12/40" in text and "eta" in text and "repo@sha256:abc" in text


def test_windows_back_cover_the_tail_first() -> None:
    assert list(windows_back(0, 10, 4)) == [(6, 10), (2, 6), (0, 2)]
    assert list(windows_back(5, 7, 100)) == [(5, 7)]
    assert list(windows_back(3, 3, 5)) == []
    with pytest.raises(ValueError, match="--limit"):
        list(windows_back(0, 10, 0))


def _dl(partition: int, offset: int, ts: int) -> DeadLetter:
    return DeadLetter("dlq", partition, offset, ts, None, b"", (), {})


def test_newest_merges_partitions_by_time() -> None:
    found = [_dl(0, 7, 100), _dl(1, 3, 300), _dl(0, 8, 200), _dl(1, 4, 400)]
    assert [(d.partition, d.offset) for d in newest(found, 3)] == [(0, 8), (1, 3), (1, 4)]
    assert newest(found, 0) == []
