"""`layerfill schemas check`: every current schema must stay BACKWARD compatible with the last released one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="Avro event contracts.")


@app.command()
def check(
    engine: Annotated[
        str, typer.Option(help="avro: Apache Avro's (Java) ReaderWriterCompatibilityChecker decides; python: no Java")
    ] = "avro",
) -> None:
    """Compare each schema in schemas/ with every version under schemas/released/; exit 1 on any
    incompatibility (a reader built from the new schema must read data written with each released one).
    The verdict is Apache Avro's; the messages name the field and the change."""
    from layerfill.serde.avro_java import AvroEngineUnavailable
    from layerfill.serde.compat import check_all

    if engine not in ("avro", "python"):
        raise typer.BadParameter(f"must be avro or python, got {engine!r}", param_hint="--engine")
    console = Console()
    try:
        problems = check_all(engine=engine)  # type: ignore[arg-type]
    except AvroEngineUnavailable as exc:
        Console(stderr=True).print(f"[red]Apache Avro's checker is unavailable:[/red] {exc} (or use --engine python)")
        raise typer.Exit(2) from exc
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
