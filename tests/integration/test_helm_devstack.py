"""The configuration the Helm chart renders starts the real processes against the local stack: the setup Job's
migration and `topics ensure`, then a fetcher with exactly the env and config file its pod would get."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from dotenv import dotenv_values

from tests.support.helm import RELEASE, find, pod_view, render
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}-layerfill"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _devstack_values(devstack: DevStack, health_port: int, group_id: str) -> dict[str, Any]:
    env = dotenv_values(devstack.ctx.paths.env_file)
    return {
        "config": {
            "log_format": "text",
            "kafka": {"bootstrap_servers": env["LAYERFILL_KAFKA__BOOTSTRAP_SERVERS"]},
            "s3": {
                "endpoint": env["LAYERFILL_S3__ENDPOINT"],
                "bucket": env["LAYERFILL_S3__BUCKET"],
                "root_directory": env["LAYERFILL_S3__ROOT_DIRECTORY"],
            },
            "fetcher": {"group_id": group_id, "transactional_id_prefix": group_id},
        },
        "secrets": {
            "databaseUrl": env["LAYERFILL_DEVSTACK_POSTGRES_URL"],
            "s3AccessKey": env["LAYERFILL_S3__ACCESS_KEY"],
            "s3SecretKey": env["LAYERFILL_S3__SECRET_KEY"],
        },
        "routes": yaml.safe_load(env["LAYERFILL_ROUTES"]),
        "fetcher": {"healthPort": health_port},
    }


def _process_env(pod_env: dict[str, str], config_file: Path) -> dict[str, str]:
    """The pod's env (config path swapped for the local copy) over a clean base: no LAYERFILL_ leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFILL_")}
    return {**base, **pod_env, "LAYERFILL_CONFIG": str(config_file), "HOME": str(config_file.parent)}


def _local(argv: list[str]) -> list[str]:
    """The container's command with this venv's executables (`python`, `layerfill`)."""
    return [str(BIN / argv[0]), *argv[1:]]


def test_chart_config_starts_setup_and_fetcher(devstack: DevStack, tmp_path: Path) -> None:
    port = _free_port()
    group = unique("helmtest")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(_devstack_values(devstack, port, group)))
    objects = render(values)
    config_file = tmp_path / "config.yaml"

    # The pre-install Job: migrate (init container), then `layerfill topics ensure`.
    job_spec = find(objects, "Job", f"{FULLNAME}-setup")["spec"]["template"]["spec"]
    for container in [*job_spec["initContainers"], *job_spec["containers"]]:
        pod = pod_view(objects, job_spec, container["name"], "setup")
        config_file.write_text(pod.config_yaml)
        argv = _local(container.get("command") or ["layerfill", *container["args"]])
        res = subprocess.run(argv, env=_process_env(pod.env, config_file), capture_output=True, text=True, timeout=180)
        assert res.returncode == 0, f"{container['name']}: {res.stdout}\n{res.stderr}"

    # The fetcher Deployment's container, started as its pod would start it.
    deploy_spec = find(objects, "Deployment", f"{FULLNAME}-fetcher")["spec"]["template"]["spec"]
    (container,) = deploy_spec["containers"]
    pod = pod_view(objects, deploy_spec, "fetcher", f"{group}-pod")
    config_file.write_text(pod.config_yaml)
    log = (tmp_path / "fetcher.log").open("w")
    proc = subprocess.Popen(
        _local(["layerfill", *container["args"]]), env=_process_env(pod.env, config_file), stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                ready = False
            if ready:
                break
            time.sleep(0.5)
        assert ready, f"fetcher not ready (exit {proc.poll()}):\n{(tmp_path / 'fetcher.log').read_text()[-4000:]}"
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        # SIGTERM, as the kubelet sends it: the fetcher stops well within the chart's grace period.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=deploy_spec["terminationGracePeriodSeconds"]) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
