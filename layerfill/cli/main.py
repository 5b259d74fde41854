"""The `layerfill` command line: one typer app, one module per command group.

Configuration and start-up failures of every command end here, in LayerfillGroup.invoke: one line naming the
field or cause plus a hint, exit 2 (`--debug` or LAYERFILL_DEBUG=1 shows the traceback instead)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from . import backfill, demo, devstack, dlq, helptext, publish, replay, run, schemas, status, topics, verify
from .errors import describe

helptext.install()

_DEBUG = "layerfill.debug"


class LayerfillGroup(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            problem = None if ctx.meta.get(_DEBUG) else describe(exc)
            if problem is None:
                raise
            # soft_wrap and no markup: one line whatever the terminal width, brackets in messages kept.
            Console(stderr=True, markup=False, highlight=False, soft_wrap=True).print(problem.line(), style="red")
            raise typer.Exit(problem.exit_code) from None


app = typer.Typer(
    name="layerfill",
    cls=LayerfillGroup,
    help="Make every image pulled through a registry pull-through cache complete in the cache.",
    epilog="Examples: `layerfill devstack up`, `layerfill run fetcher`, `layerfill status --repository library/`, "
    "`layerfill --debug run fetcher` (tracebacks instead of one-line errors).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"layerfill {version('layerfill')}")
        except PackageNotFoundError:  # running from a checkout that was never installed
            typer.echo("layerfill (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="LAYERFILL_DEBUG", help="Show tracebacks instead of one-line errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.meta[_DEBUG] = debug


app.add_typer(devstack.app, name="devstack")
app.add_typer(topics.app, name="topics")
app.add_typer(run.app, name="run")
app.add_typer(schemas.app, name="schemas")
app.command(name="publish")(publish.publish)
app.command(name="demo")(demo.demo)
app.command(name="status")(status.status)
app.command(name="verify")(verify.verify)
app.command(name="backfill")(backfill.backfill)
app.command(name="replay")(replay.replay)
app.add_typer(dlq.app, name="dlq")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
