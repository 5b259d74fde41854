"""`layerfill demo`: the main job on the local stack, end to end, as a user would see it.

A client pulls image A, then image B that shares A's base layer, through the proxy cache: it skips the base
layer it already has, so the cache never links it into B. layerfill (bridge + fetcher, started here) completes B;
the table shows B's blobs turning present. Then the upstream is stopped and a client with no layers pulls B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

console = Console()


def demo(
    keep_running: Annotated[bool, typer.Option(help="Leave the bridge and fetcher running afterwards.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the image to become complete.")] = 120,
) -> None:
    """Pull an image through the proxy cache with a client that already has its base layer, and watch
    layerfill make it complete; then pull it again with the upstream down."""
    from layerfill.config import load_settings
    from layerfill.devstack.seed import seed
    from layerfill.devstack.stack import Stack
    from layerfill.kafka.admin import ensure_topics
    from layerfill.sinks.base import Presence
    from layerfill.sinks.distribution import DistributionSink

    stack = Stack(log=lambda m: console.print(f"[dim]{m}[/dim]"))
    if not all(s.healthy or s.optional for s in stack.status()):
        console.print("[red]the devstack is not up: run `layerfill devstack up` (or `make demo`)[/red]")
        raise typer.Exit(1)
    ctx = stack.ctx
    os.environ.setdefault("LAYERFILL_ENV_FILE", str(ctx.paths.env_file))
    state_db = ctx.paths.state / "layerfill-state.db"
    os.environ.setdefault("LAYERFILL_STATE__DATABASE_URL", f"sqlite:///{state_db}")
    settings = load_settings()
    ensure_topics(settings.kafka, settings.topics.all())

    prefix = f"run-{uuid.uuid4().hex[:6]}"
    console.rule(f"1. seed the upstream with demo images under {prefix}/")
    pushed = seed(ctx, large_size=0, prefix=prefix, names=["demo/app-a:1", "demo/app-b:1"])
    repo_a, repo_b = f"{prefix}/demo/app-a", f"{prefix}/demo/app-b"
    digest_b = pushed[f"{repo_b}:1"]

    console.rule("2. start layerfill: bridge (registry notifications -> Kafka) and fetcher")
    procs = _start_processes(ctx.paths.logs)
    try:
        proxy = f"{ctx.host}:{ctx.ports.proxy}"
        client = Path(tempfile.mkdtemp(prefix="layerfill-demo-client-"))
        console.rule(f"3. a client pulls {repo_a}:1, then {repo_b}:1 into the same OCI layout")
        for repo in (repo_a, repo_b):
            _skopeo(proxy, repo, client, repo.rsplit("/", 1)[1])
        console.print("   the client already had the base layer, so it never asked the cache for it for B")

        console.rule(f"4. watch {repo_b}:1 become complete in the cache's storage")
        sink = DistributionSink(settings.s3)
        manifest = json.loads(sink.read_blob_bytes(digest_b))
        blobs = [("config", manifest["config"])] + [(f"layer {i}", d) for i, d in enumerate(manifest["layers"])]
        deadline = time.monotonic() + timeout
        complete = False
        with Live(console=console, refresh_per_second=4) as live:
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
        if not complete:
            console.print(f"[red]not complete within {timeout:.0f}s; see {ctx.paths.logs}/demo-fetcher.log[/red]")
            raise typer.Exit(1)
        console.print(f"[green]{repo_b}:1 is complete in the cache[/green]")

        console.rule("5. stop the upstream; a client with no layers pulls B from the cache alone")
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
            console.print(f"bridge and fetcher keep running (pids {', '.join(str(p.pid) for p in procs)})")


def _start_processes(logs: Path) -> list[subprocess.Popen]:
    import requests

    procs = []
    for role in ("bridge", "fetcher"):
        log = open(logs / f"demo-{role}.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ, LAYERFILL_LOG_FORMAT="text")
        procs.append(
            subprocess.Popen([sys.executable, "-m", "layerfill.cli.main", "run", role], stdout=log, stderr=log, env=env)
        )
        log.close()
    from layerfill.config import load_settings

    s = load_settings()
    for url in (f"http://127.0.0.1:{s.bridge.port}/healthz", f"http://127.0.0.1:{s.fetcher.health_port}/readyz"):
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
    console.print(f"   bridge and fetcher running; logs in {logs}/demo-bridge.log, demo-fetcher.log")
    return procs


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
