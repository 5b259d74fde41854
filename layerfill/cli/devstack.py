"""`layerfill devstack up | status | down | seed | logs`: the local stack of real services."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from layerfill.cli.progress import spinner

app = typer.Typer(
    help="Run the local stack of real services (Kafka, S3, registries, PostgreSQL, Clair).",
    epilog="Examples: `layerfill devstack up`; `layerfill devstack stop upstream` (a failure drill); "
    "`eval $(layerfill devstack env)`.",
)
err = Console(stderr=True)

DistOpt = Annotated[
    str,
    typer.Option("--distribution", "-d", help="CNCF distribution for upstream and proxy: v3 (3.1.1) or 2.8."),
]


WithOpt = Annotated[
    list[str] | None,
    typer.Option("--with", help="Optional services to run too (repeatable): quay."),
]
OPTIONAL_SERVICES = ("quay",)


def _stack(distribution: str = "v3", with_: list[str] | None = None):
    from layerfill.devstack.context import StackContext
    from layerfill.devstack.stack import Stack

    if distribution not in ("v3", "2.8"):
        err.print(f"[red]--distribution must be v3 or 2.8, not {distribution!r}[/red]")
        raise typer.Exit(2)
    extras = _recorded_with() if with_ is None else with_
    unknown = [w for w in extras if w not in OPTIONAL_SERVICES]
    if unknown:
        err.print(f"[red]--with takes {', '.join(OPTIONAL_SERVICES)}, not {', '.join(map(repr, unknown))}[/red]")
        raise typer.Exit(2)
    ctx = StackContext(distribution=distribution, with_quay="quay" in extras)  # type: ignore[arg-type]
    return Stack(ctx, log=lambda m: err.print(f"[dim]{m}[/dim]"))


@app.command()
def up(
    distribution: DistOpt = "v3",
    install: Annotated[bool, typer.Option(help="Install what is missing first.")] = True,
    with_: WithOpt = None,
) -> None:
    """Install what is missing, start every service on 127.0.0.1, wait for health, write the env file."""
    from layerfill.devstack.install import InstallError
    from layerfill.devstack.quay_install import QuayInstallError
    from layerfill.devstack.services.base import ServiceError

    # A stack running with Quay keeps it: `make demo` after `make up UP_FLAGS="--with quay"` must not
    # drop Quay from the env file.
    running = [w for w in _recorded_with() if _stack(distribution, [w]).quay.process.pid()]
    stack = _stack(distribution, sorted(set(with_ or []) | set(running)))
    try:
        with spinner(err, "starting the devstack") as log:
            stack.log = log
            stack.up(install=install)
    except (ServiceError, InstallError, QuayInstallError) as exc:
        err.print(f"[red]devstack up failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    _print_status(stack, as_json=False)
    err.print(f"env file: {stack.ctx.paths.env_file}  logs: {stack.ctx.paths.logs}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """One line per service: name, endpoint, pid, healthy. Exit 1 if any required service is unhealthy."""
    stack = _stack(_recorded_distribution())
    if not _print_status(stack, as_json):
        raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop the processes that `up` started (and only those)."""
    stack = _stack(_recorded_distribution())
    stopped = stack.down()
    err.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def stop(service: str) -> None:
    """Stop one service (for failure drills: e.g. `upstream`)."""
    _stack(_recorded_distribution()).stop(service)


@app.command()
def start(service: str) -> None:
    """Start one service again and wait until it is healthy."""
    stack = _stack(_recorded_distribution())
    with spinner(err, f"starting {service}") as log:
        stack.log = log
        stack.start(service)


@app.command()
def seed(
    large_size: Annotated[int, typer.Option(help="Size of the large image's random layer in bytes (0 = none).")] = 64
    * 1024
    * 1024,
    prefix: Annotated[str, typer.Option(help="Push under this repository prefix.")] = "",
) -> None:
    """Build the test images (shared base layer, multi-arch index, large layer, Debian packages) and push them
    to the upstream registry."""
    from layerfill.devstack.seed import seed as do_seed
    from layerfill.testimages.push import PushError

    stack = _stack(_recorded_distribution())
    try:
        with err.status("building the test images and pushing them to the upstream", spinner="dots"):
            pushed = do_seed(stack.ctx, large_size=large_size, prefix=prefix)
    except PushError as exc:
        err.print(f"[red]seed failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table("image (upstream)", "digest")
    for ref, digest in pushed.items():
        table.add_row(f"{stack.ctx.host}:{stack.ctx.ports.upstream}/{ref}", digest)
    Console().print(table)


@app.command()
def env() -> None:
    """Print the env file (source it in a shell: `eval $(layerfill devstack env)`)."""
    stack = _stack(_recorded_distribution())
    sys.stdout.write("".join(f"export {line}\n" for line in _env_lines(stack)))


def _env_lines(stack) -> list[str]:
    try:
        text = stack.ctx.paths.env_file.read_text()
    except FileNotFoundError:
        err.print("no env file: run `layerfill devstack up` first")
        raise typer.Exit(1) from None
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def _recorded_distribution() -> str:
    from layerfill.devstack.paths import default_paths

    try:
        for line in default_paths().env_file.read_text().splitlines():
            if line.startswith("LAYERFILL_DEVSTACK_DISTRIBUTION="):
                return line.split("=", 1)[1]
    except FileNotFoundError:
        pass
    return "v3"


def _recorded_with() -> list[str]:
    """The optional services the running stack was brought up with (from its env file)."""
    from layerfill.devstack.paths import default_paths

    try:
        lines = default_paths().env_file.read_text().splitlines()
    except FileNotFoundError:
        return []
    return ["quay"] if "LAYERFILL_DEVSTACK_WITH_QUAY=1" in lines else []


def _print_status(stack, as_json: bool) -> bool:
    rows = stack.status()
    ok = all(r.healthy or r.optional for r in rows)
    if as_json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return ok
    table = Table(show_header=True, header_style="bold")
    for col in ("service", "endpoint", "pid", "healthy"):
        table.add_column(col)
    for r in rows:
        mark = (
            "[green]yes[/green]" if r.healthy else ("[yellow]no (optional)[/yellow]" if r.optional else "[red]no[/red]")
        )
        table.add_row(r.name, r.endpoint, str(r.pid or "-"), mark)
    Console().print(table)
    return ok
