"""Progress shown on stderr while long commands run: a bar with count, elapsed time and ETA for work of known
size (backfill, verify), a spinner for waits of unknown length (listings, builds, health waits)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def bar(label: str, console: Console) -> Progress:
    """`label ━━━━━━━━ 12/40 0:00:03 eta 0:00:07 repo@sha256:...`; transient: the final report replaces it."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )


@contextmanager
def spinner(console: Console, first: str) -> Iterator[Callable[[str], None]]:
    """A spinner on `console` for a wait of unknown length; the yielded `log` prints a step and shows it next to
    the spinner until the next step (devstack up: installs, builds, starts, health waits)."""
    with console.status(first, spinner="dots") as status:

        def log(message: str) -> None:
            console.print(f"[dim]{message}[/dim]")
            status.update(message)

        yield log
