"""The `layerfill` command line: one typer app, one module per command group."""

from __future__ import annotations

import typer

from . import backfill, demo, devstack, dlq, publish, replay, run, schemas, status, topics, verify

app = typer.Typer(
    name="layerfill",
    help="Make every image pulled through a registry pull-through cache complete in the cache.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
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
    main()
