"""`layerfill schemas check`: every current schema must stay BACKWARD compatible with the last released one."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(help="Avro event contracts.")


@app.command()
def check() -> None:
    """Compare each schema in schemas/ with the newest version under schemas/released/; exit 1 on any
    incompatibility (a reader built from the new schema must read data written with the released one)."""
    from layerfill.serde.compat import check_all

    console = Console()
    problems = check_all()
    bad = {name: issues for name, issues in problems.items() if issues}
    for name, issues in sorted(problems.items()):
        if issues:
            console.print(f"[red]{name}: NOT backward compatible[/red]")
            for issue in issues:
                console.print(f"  - {issue}")
        else:
            console.print(f"[green]{name}: backward compatible[/green]")
    if bad:
        raise typer.Exit(1)
