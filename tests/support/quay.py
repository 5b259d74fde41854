"""The devstack's Quay from tests: its endpoints and credentials (from the env file `up --with quay` wrote),
pulls through its proxy-cache organization, its storage, and restarts. Tests skip when the stack was brought
up without Quay (CI brings it up with Quay)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from layerfill.devstack.context import StackContext
from layerfill.devstack.stack import Stack
from layerfill.remote.client import RegistryClient
from tests.support.pipeline import Pipeline, free_port
from tests.support.stack import DevStack


@dataclass(frozen=True)
class Quay:
    env: dict[str, str]
    stack: Stack

    def __getattr__(self, name: str) -> str:
        key = f"LAYERFILL_DEVSTACK_QUAY_{name.upper()}"
        if key not in self.env:
            raise AttributeError(name)
        return self.env[key]

    @property
    def admin_creds(self) -> tuple[str, str]:
        return self.env["LAYERFILL_DEVSTACK_QUAY_ADMIN"], self.env["LAYERFILL_DEVSTACK_QUAY_ADMIN_PASSWORD"]

    def blob_stored(self, digest: str) -> bool:
        """Quay's LocalStorage holds the blob's bytes (storage is shared by every repository)."""
        hexd = digest.split(":", 1)[1]
        return (Path(self.storage) / "sha256" / hexd[:2] / hexd).is_file()

    def restart(self, service: str = "quay") -> None:
        self.stack.stop(service)
        self.stack.start(service)

    def client(self, url: str | None = None) -> RegistryClient:
        """A fresh client (nothing cached) pulling as the admin user, i.e. as any user of the organization."""
        return RegistryClient(url or self.url, self.admin_creds)


def quay_or_skip(devstack: DevStack) -> Quay:
    env = {}
    for line in devstack.ctx.paths.env_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v.strip("'")
    if env.get("LAYERFILL_DEVSTACK_WITH_QUAY") != "1":
        pytest.skip("the devstack was brought up without Quay (`layerfill devstack up --with quay`)")
    stack = Stack(StackContext(distribution=devstack.ctx.distribution, with_quay=True), log=print)
    return Quay(env, stack)


def skopeo_pull(quay: Quay, registry: str, repository: str, ref: str, layout: Path, *, tag: str | None = None,
                arch: str | None = None, all_platforms: bool = False) -> subprocess.CompletedProcess:  # fmt: skip
    user, password = quay.admin_creds
    src = f"docker://{registry}/{repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"
    argv = ["skopeo", "--insecure-policy"]
    if arch:
        argv += ["--override-arch", arch, "--override-os", "linux"]
    argv += ["copy", "--src-tls-verify=false", "--src-creds", f"{user}:{password}"]
    if all_platforms:
        argv.append("--all")
    argv += [src, f"oci:{layout}:{tag or ref.replace(':', '-')}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def quay_routes(quay: Quay, devstack: DevStack) -> list[dict]:
    """The devstack's routes for both Quay web processes (registry sink, the robot's credentials)."""
    return [
        {
            "registry": registry,
            "repository_prefix": quay.org,
            "upstream_url": f"http://{devstack.upstream_registry}",
            "sink": "registry",
            "proxy_url": url,
            "proxy_username": quay.robot,
            "proxy_password": quay.robot_token,
        }
        for registry, url in ((quay.registry, quay.url), (quay.dblogs_registry, quay.dblogs_url))
    ]


def start_from_now(bootstrap: str, topic: str, group: str) -> None:
    """Commit `group`'s offsets at the end of `topic`, so a new source ignores what earlier tests pulled."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]) for p in parts
        ]
        c.commit(offsets=ends, asynchronous=False)
    finally:
        c.close()


def start_quay_logs(p: Pipeline, quay: Quay, source: str, name: str = "quay-logs", first: bool = True) -> None:
    """`layerfill run quay-logs` for this pipeline: its own consumer group (from now on, on the `first` start)
    and checkpoint topic."""
    port = p.health_ports.setdefault(name, free_port())
    group = f"{p.id}-quay-logs"
    url = quay.url if source == "kafka" else quay.dblogs_url
    env = {
        "LAYERFILL_QUAY_LOGS__SOURCE": source,
        "LAYERFILL_QUAY_LOGS__QUAY_URL": url,
        "LAYERFILL_QUAY_LOGS__GROUP_ID": group,
        "LAYERFILL_QUAY_LOGS__INSTANCE_ID": p.id,
        "LAYERFILL_QUAY_LOGS__HEALTH_PORT": str(port),
        "LAYERFILL_QUAY_LOGS__LOGS_TOPIC": quay.logs_topic,
        "LAYERFILL_QUAY_LOGS__KINDS_DATABASE_URL": quay.db_url,
        "LAYERFILL_QUAY_LOGS__API_TOKEN": quay.api_token,
        "LAYERFILL_QUAY_LOGS__POLL_INTERVAL_S": "1",
        "LAYERFILL_QUAY_LOGS__CHECKPOINT_TOPIC": f"lf-{p.id}.quay-checkpoints",
    }
    if source == "kafka" and first:
        start_from_now(p.settings.kafka.bootstrap_servers, quay.logs_topic, group)
    p.start("quay-logs", name=name, env=env)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5) -> float:
    """Seconds until `predicate()` held; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - started


def pulled_ids(p: Pipeline) -> list[str]:
    return [r["event_id"] for r in p.read(p.topics.manifest_pulled.name)]


def api_pull_count(quay: Quay, org: str, repository_prefix: str) -> int:
    """Pulls of repositories under `repository_prefix` that Quay's database logs model holds (dblogs instance)."""
    n = 0
    params: dict[str, str] = {}
    url = f"{quay.dblogs_url}/api/v1/organization/{org}/logs"
    while True:
        doc = requests.get(url, params=params, headers={"Authorization": f"Bearer {quay.api_token}"}, timeout=30).json()
        for e in doc.get("logs", []):
            if e.get("kind") == "pull_repo" and e.get("metadata", {}).get("repo", "").startswith(repository_prefix):
                n += 1
        if not doc.get("next_page"):
            return n
        params = {"next_page": doc["next_page"]}


def unique_id() -> str:
    return uuid.uuid4().hex[:8]


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
