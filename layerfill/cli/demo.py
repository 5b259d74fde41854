"""`layerfill demo`: the main job on the local stack, end to end, as a user would see it: both seed scenarios.

A client pulls image A, then image B that shares A's base layer, through the proxy cache: it skips the base
layer it already has, so the cache never links it into B. layerfill (bridge, fetcher and scanner, started here)
completes B; the table shows B's blobs turning present. Scenario 1: Clair's report for B lists the packages of
the base layer the client skipped and the local feed's CVE. Scenario 2: the upstream is stopped and a client with
no layers pulls B from the cache alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

if TYPE_CHECKING:
    from layerfill.config.settings import Settings

console = Console()


def demo(
    keep_running: Annotated[
        bool, typer.Option(help="Leave the bridge, fetcher and scanner running afterwards.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each step: B complete, then B scanned.")] = 180,
) -> None:
    """The main job on the local stack: both seed scenarios, end to end.

    A client that already has an image's base layer pulls it through the proxy cache; layerfill makes it complete,
    Clair's report shows the skipped base layer's packages and a CVE, then the image is pulled with the upstream
    down.

    Examples:

      make demo

      layerfill demo --keep-running
    """
    from layerfill.config import load_settings
    from layerfill.devstack.seed import seed
    from layerfill.devstack.stack import Stack
    from layerfill.kafka.admin import ensure_topics
    from layerfill.sinks.base import Presence
    from layerfill.sinks.factory import cache_storage

    stack = Stack(log=lambda m: console.print(f"[dim]{m}[/dim]"))
    if not all(s.healthy or s.optional for s in stack.status()):
        console.print("[red]the devstack is not up: run `layerfill devstack up` (or `make demo`)[/red]")
        raise typer.Exit(1)
    ctx = stack.ctx
    os.environ.setdefault("LAYERFILL_ENV_FILE", str(ctx.paths.env_file))
    settings = load_settings()
    ensure_topics(settings.kafka, settings.topics.all())

    prefix = f"run-{uuid.uuid4().hex[:6]}"
    console.rule(f"1. seed the upstream with demo images under {prefix}/")
    pushed = seed(ctx, large_size=0, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    repo_a, repo_b = f"{prefix}/demo/app-a", f"{prefix}/demo/app-b"
    digest_b = pushed[f"{repo_b}:1"]

    console.rule("2. start layerfill: bridge (registry notifications -> Kafka), fetcher and scanner (-> Clair)")
    procs = _start_processes(ctx.paths.logs)
    try:
        proxy = f"{ctx.host}:{ctx.ports.proxy}"
        client = Path(tempfile.mkdtemp(prefix="layerfill-demo-client-"))
        console.rule(f"3. a client pulls {repo_a}:1, then {repo_b}:1 into the same OCI layout")
        for repo in (repo_a, repo_b):
            _skopeo(proxy, repo, client, repo.rsplit("/", 1)[1])
        console.print("   the client already had the base layer, so it never asked the cache for it for B")

        console.rule(f"4. watch {repo_b}:1 become complete in the cache's storage")
        sink = cache_storage(settings.s3)
        manifest = json.loads(sink.read_blob_bytes(digest_b))
        blobs = [("config", manifest["config"])] + [(f"layer {i}", d) for i, d in enumerate(manifest["layers"])]
        deadline = time.monotonic() + timeout
        complete = False
        table = Table()
        # Transient: the final table is printed once below, on lines of its own, whatever the terminal.
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            while time.monotonic() < deadline:
                table = Table("blob", "digest", "size", f"linked in {repo_b}")
                states = []
                for label, d in blobs:
                    present = sink.blob_presence(repo_b, d["digest"]) == Presence.LINKED
                    states.append(present)
                    mark = "[green]yes[/green]" if present else "[red]missing[/red]"
                    table.add_row(label, d["digest"][:19] + "…", f"{d['size']:,}", mark)
                live.update(table)
                if all(states):
                    complete = True
                    break
                time.sleep(0.5)
        console.print(table)
        if not complete:
            console.print(f"[red]not complete within {timeout:.0f}s; see {ctx.paths.logs}/demo-fetcher.log[/red]")
            raise typer.Exit(1)
        console.print(f"[green]{repo_b}:1 is complete in the cache[/green]")

        console.rule(f"5. seed scenario 1: Clair's report for {repo_b}:1, base layer included")
        base = manifest["layers"][0]["digest"]
        if not _show_clair_report(settings, proxy, digest_b, base, deadline=time.monotonic() + timeout):
            console.print(
                f"[red]no scan of {repo_b}:1 within {timeout:.0f}s; see {ctx.paths.logs}/demo-scanner.log[/red]"
            )
            raise typer.Exit(1)

        console.rule("6. seed scenario 2: stop the upstream; a client with no layers pulls B from the cache alone")
        stack.stop("upstream")
        try:
            empty = Path(tempfile.mkdtemp(prefix="layerfill-demo-offline-"))
            ok = _skopeo(proxy, repo_b, empty, "b", check=False)
        finally:
            stack.start("upstream")
        if not ok:
            console.print("[red]offline pull failed[/red]")
            raise typer.Exit(1)
        console.print(f"[green]pulled {repo_b}:1 with the upstream down: every blob came from the cache[/green]")
    finally:
        if not keep_running:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
        else:
            console.print(f"bridge, fetcher and scanner keep running (pids {', '.join(str(p.pid) for p in procs)})")


def _start_processes(logs: Path) -> list[subprocess.Popen]:
    import requests

    from layerfill.config import load_settings

    s = load_settings()
    # Health ports of their own: another stack's fetcher or scanner on this machine may hold the defaults.
    ports = {"fetcher": _free_port(), "scanner": _free_port()}
    env = dict(os.environ, LAYERFILL_LOG_FORMAT="text", LAYERFILL_FETCHER__HEALTH_PORT=str(ports["fetcher"]),
               LAYERFILL_SCANNER__HEALTH_PORT=str(ports["scanner"]))  # fmt: skip
    procs = []
    for role in ("bridge", "fetcher", "scanner"):
        log = open(logs / f"demo-{role}.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(
            subprocess.Popen([sys.executable, "-m", "layerfill.cli.main", "run", role], stdout=log, stderr=log, env=env)
        )
        log.close()
    urls = [f"http://127.0.0.1:{s.bridge.port}/healthz"] + [f"http://127.0.0.1:{p}/readyz" for p in ports.values()]
    for url in urls:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"layerfill process did not start; see {logs}/demo-*.log")
            time.sleep(0.3)
    console.print(
        f"   bridge, fetcher and scanner running; logs in {logs}/demo-bridge.log, demo-fetcher.log, demo-scanner.log"
    )
    return procs


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _show_clair_report(settings: Settings, registry: str, digest: str, base: str, deadline: float) -> bool:
    """Wait for the scanner's record of `digest`, then print Clair's own reports: packages with the layer that
    introduced them (the base layer is the one the client skipped), and vulnerabilities."""
    from layerfill.consumers.scanner.clair import ClairClient
    from layerfill.state import ScanState, StateStore

    from .clair_view import package_rows, vulnerability_rows

    scan = None
    with StateStore(settings.state.database_url) as store, console.status("waiting for the scanner", spinner="dots"):
        while time.monotonic() < deadline:
            scan = store.scan_for(registry, digest)
            if scan is not None and scan.state is not ScanState.PENDING:
                break
            time.sleep(1)
    if scan is None or scan.state is ScanState.PENDING:
        return False
    from .status import format_vulnerabilities

    console.print(
        f"   the scanner recorded: {scan.state.value}, {scan.package_count} packages, "
        f"vulnerabilities: {format_vulnerabilities(scan.vulnerabilities)}"
    )
    clair = ClairClient(settings.scanner.clair_url)
    try:
        index = clair.index_report(digest) or {}
        report = clair.vulnerability_report(digest) or {}
    finally:
        clair.close()
    packages = Table("package", "version", "introduced in", title=f"Clair index report ({settings.scanner.clair_url})")
    for row in package_rows(index):
        where = ", ".join("base layer (the client skipped it)" if d == base else d[:19] + "…" for d in row.layers)
        packages.add_row(row.name, row.version, where)
    console.print(packages)
    vulns = Table("vulnerability", "package", "installed", "fixed in", "severity", title="Clair vulnerability report")
    for v in vulnerability_rows(report):
        vulns.add_row(v.name, v.package, v.installed, v.fixed_in, v.severity)
    console.print(vulns)
    return True


def _skopeo(registry: str, repository: str, layout: Path, tag: str, check: bool = True) -> bool:
    argv = ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
            f"docker://{registry}/{repository}:1", f"oci:{layout}:{tag}"]  # fmt: skip
    console.print(f"   $ {' '.join(argv)}")
    res = subprocess.run(argv, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.startswith(("Copying blob", "Copying config")):
            console.print(f"     {line}")
    if res.returncode != 0:
        console.print(f"[red]{res.stderr.strip()}[/red]")
        if check:
            raise typer.Exit(1)
        return False
    return True
