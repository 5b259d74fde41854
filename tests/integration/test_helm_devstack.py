"""The configuration the Helm chart renders runs the real processes against the local stack, exactly as the pods
would start them (the image's ENTRYPOINT with the container's command/args, the env resolved from the rendered
Secrets, the rendered ConfigMap as LAYERFILL_CONFIG): the setup Job migrates a fresh database and creates the
topics, then a pull through the proxy cache goes bridge -> fetcher -> scanner (the real Clair) with every probe,
metrics endpoint and port taken from the rendered objects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import sqlalchemy as sa
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from dotenv import dotenv_values
from prometheus_client.parser import text_string_to_metric_families

from layerfill.config.settings import KafkaSettings, TopicsSettings
from layerfill.kafka.admin import delete_topics
from layerfill.serde.codec import EventCodec
from layerfill.state import current_revision, head_revision
from layerfill.testimages import debian
from layerfill.testimages.catalog import AMD64
from layerfill.testimages.layout import OciLayout
from layerfill.testimages.push import push_image
from tests.support.clients import skopeo_pull
from tests.support.helm import RELEASE, container_argv, find, image_spec, pod_view, render
from tests.support.pipeline import free_port
from tests.support.stack import DevStack, unique

pytestmark = pytest.mark.integration

FULLNAME = f"{RELEASE}-layerfill"
BIN = Path(sys.executable).parent
COMPONENTS = ("bridge", "fetcher", "scanner")
PARTITIONS = 2
# The Debian rootfs of layerfill.testimages.debian: its dpkg status lists base-files, libc6, zlib1g and openssl,
# and the devstack's local Clair feed names one CVE (severity unknown) for that openssl.
DEBIAN_PACKAGES = 4


# -- the stack as values -----------------------------------------------------------------------------------------------


@contextmanager
def _fresh_database(devstack: DevStack) -> Iterator[str]:
    """A new, empty PostgreSQL database on the devstack server (so the Job's migration starts from nothing)."""
    server = sa.make_url(dotenv_values(devstack.ctx.paths.env_file)["LAYERFILL_DEVSTACK_POSTGRES_URL"])
    name = f"lf_helm_{uuid.uuid4().hex[:10]}"
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        # A plain postgresql:// URL, as a user would write it (layerfill picks the psycopg driver).
        yield server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _values(devstack: DevStack, *, test_id: str, prefix: str, database_url: str, ports: dict[str, int]) -> dict:
    env = dotenv_values(devstack.ctx.paths.env_file)
    topics = {
        field: {"name": f"lf-{test_id}.{field}", "partitions": PARTITIONS} for field in TopicsSettings.model_fields
    }
    return {
        "config": {
            "log_format": "text",
            "kafka": {"bootstrap_servers": env["LAYERFILL_KAFKA__BOOTSTRAP_SERVERS"]},
            "s3": {
                "endpoint": env["LAYERFILL_S3__ENDPOINT"],
                "bucket": env["LAYERFILL_S3__BUCKET"],
                "root_directory": env["LAYERFILL_S3__ROOT_DIRECTORY"],
            },
            "topics": topics,
            "fetcher": {"group_id": f"{test_id}-fetcher", "transactional_id_prefix": f"{test_id}-fetcher"},
            "scanner": {"group_id": f"{test_id}-scanner", "clair_url": env["LAYERFILL_SCANNER__CLAIR_URL"]},
        },
        "secrets": {
            "databaseUrl": database_url,
            "s3AccessKey": env["LAYERFILL_S3__ACCESS_KEY"],
            "s3SecretKey": env["LAYERFILL_S3__SECRET_KEY"],
            # The token the devstack's proxy registry sends with its notifications.
            "bridgeToken": env["LAYERFILL_BRIDGE__TOKEN"],
        },
        # Only this test's repositories: the shared proxy also delivers other tests' older notifications.
        "routes": [
            {
                "registry": devstack.proxy_registry,
                "repository_prefix": prefix,
                "strip_prefix": False,
                "upstream_url": f"http://{devstack.upstream_registry}",
                "sink": "distribution",
                "proxy_url": f"http://{devstack.proxy_registry}",
            }
        ],
        "bridge": {"port": ports["bridge"]},
        "fetcher": {"healthPort": ports["fetcher"]},
        "scanner": {"healthPort": ports["scanner"]},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }


# -- pods as local processes -------------------------------------------------------------------------------------------


def _process_env(pod_env: dict[str, str], config_file: Path) -> dict[str, str]:
    """The pod's env (config path swapped for the local copy) over a clean base: no LAYERFILL_ leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFILL_")}
    return {**base, **pod_env, "LAYERFILL_CONFIG": str(config_file), "HOME": str(config_file.parent)}


def _local(argv: list[str]) -> list[str]:
    """The container's argv with this venv's executables for the image's (`python`, `layerfill`)."""
    assert argv[0] in ("python", "layerfill"), argv
    return [str(BIN / argv[0]), *argv[1:]]


class Pod:
    """One rendered Deployment's container, run as a local process."""

    def __init__(self, objects: list[dict[str, Any]], component: str, workdir: Path, test_id: str) -> None:
        self.component = component
        self.spec = find(objects, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"]
        (self.container,) = self.spec["containers"]
        self.ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.name = f"{test_id}-{component}-0"  # the pod name: the fetcher's and scanner's instance id
        view = pod_view(objects, self.spec, component, self.name)
        config_file = workdir / component / "config.yaml"
        config_file.parent.mkdir()
        config_file.write_text(view.config_yaml)
        self.log_file = workdir / f"{component}.log"
        with self.log_file.open("w") as log:
            self.proc = subprocess.Popen(
                _local(container_argv(self.container, image_spec())),
                env=_process_env(view.env, config_file),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def url(self, port_name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        return self.url(get["port"], get["path"])

    def log(self) -> str:
        return f"--- {self.component} (exit {self.proc.poll()})\n{self.log_file.read_text(errors='replace')[-4000:]}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _wait_ready(pods: list[Pod]) -> None:
    """Until every pod's readiness probe (path and port as rendered) answers 200, as the kubelet waits."""
    waiting = list(pods)
    deadline = time.monotonic() + 120
    while waiting and time.monotonic() < deadline:
        for pod in list(waiting):
            assert pod.proc.poll() is None, f"{pod.component} exited before it was ready\n{pod.log()}"
            try:
                if requests.get(pod.probe_url("readinessProbe"), timeout=2).status_code == 200:
                    waiting.remove(pod)
            except requests.ConnectionError:
                pass
        time.sleep(0.5)
    assert not waiting, "not ready:\n" + "\n".join(p.log() for p in waiting)


def _counter(pod: Pod, path: str, port_name: str, name: str, **labels: str) -> float:
    text = requests.get(pod.url(port_name, path), timeout=5).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- Kafka -------------------------------------------------------------------------------------------------------------


class Reader:
    """Every committed record of a topic from its start (read_committed), decoded, gathered until a condition."""

    def __init__(self, kafka: KafkaSettings, topic: str, logs: Callable[[], str]) -> None:
        self.topic = topic
        self.logs = logs
        self.records: list[dict[str, Any]] = []
        self.codec = EventCodec()
        self.consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])

    def until(self, what: str, cond: Callable[[dict[str, Any]], bool], timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not [r for r in self.records if cond(r)]:
            assert time.monotonic() < deadline, f"no {what} on {self.topic} within {timeout}s\n{self.logs()}"
            for m in self.consumer.consume(100, timeout=1):
                if not m.error():
                    self.records.append(self.codec.decode(m.value())[1])
        return [r for r in self.records if cond(r)]

    def close(self) -> None:
        self.consumer.close()


def _push_debian_image(devstack: DevStack, workdir: Path, repository: str) -> str:
    """A one-layer Debian image with a base layer Clair has never seen; returns its manifest digest."""
    layout = OciLayout(workdir / "images")
    files = debian.rootfs_files()
    files["etc/layerfill-test-id"] = f"{repository} {uuid.uuid4()}\n".encode()
    image = layout.add_image([layout.add_layer(files)], AMD64, history=["debian bookworm rootfs"])
    layout.tag("app", image.manifest)
    layout.save()
    push_image(layout.root, "app", devstack.upstream_registry, repository, dest_tag="1")
    return image.manifest.digest


# -- the test ----------------------------------------------------------------------------------------------------------


def test_chart_config_runs_setup_job_and_the_chain_bridge_fetcher_scanner(devstack: DevStack, tmp_path: Path) -> None:
    test_id = f"h{uuid.uuid4().hex[:8]}"
    prefix = unique("helm")
    repository = f"{prefix}/demo/app"
    # The bridge listens where the devstack's proxy registry sends its notifications.
    ports = {"bridge": devstack.ctx.ports.bridge, "fetcher": free_port(), "scanner": free_port()}
    kafka = devstack.settings().kafka
    pods: list[Pod] = []
    readers: list[Reader] = []
    with _fresh_database(devstack) as database_url:
        values = tmp_path / "values.yaml"
        values.write_text(yaml.safe_dump(_values(devstack, test_id=test_id, prefix=prefix, database_url=database_url,
                                                 ports=ports)))  # fmt: skip
        objects = render(values)
        topics = TopicsSettings.model_validate(
            yaml.safe_load(find(objects, "ConfigMap", FULLNAME)["data"]["config.yaml"])["topics"]
        )
        try:
            # The pre-install Job, container by container (init first) with its own hook ConfigMap and Secret.
            job_spec = find(objects, "Job", f"{FULLNAME}-setup")["spec"]["template"]["spec"]
            for container in [*job_spec["initContainers"], *job_spec["containers"]]:
                view = pod_view(objects, job_spec, container["name"], "setup")
                config_file = tmp_path / "setup" / container["name"] / "config.yaml"
                config_file.parent.mkdir(parents=True)
                config_file.write_text(view.config_yaml)
                argv = _local(container_argv(container, image_spec()))
                res = subprocess.run(
                    argv, env=_process_env(view.env, config_file), capture_output=True, text=True, timeout=180
                )
                assert res.returncode == 0, f"{container['name']}: {res.stdout}\n{res.stderr}"
            assert current_revision(database_url) == head_revision()
            existing = AdminClient(kafka.client_config()).list_topics(timeout=10).topics
            for spec in topics.all():
                assert len(existing[spec.name].partitions) == PARTITIONS, spec.name

            pods = [Pod(objects, c, tmp_path, test_id) for c in COMPONENTS]
            by_name = {p.component: p for p in pods}
            _wait_ready(pods)
            for pod in pods:
                assert requests.get(pod.probe_url("livenessProbe"), timeout=5).status_code == 200, pod.component

            def logs() -> str:
                return "\n".join(p.log() for p in pods)

            readers = [
                Reader(kafka, t.name, logs) for t in (topics.manifest_pulled, topics.image_cached, topics.image_scanned)
            ]
            pulled, cached, scanned = readers

            digest = _push_debian_image(devstack, tmp_path, repository)
            res = skopeo_pull(devstack.proxy_registry, repository, "1", tmp_path / "client", tag="app")
            assert res.returncode == 0, res.stderr

            def ours(r: dict[str, Any]) -> bool:
                return r["repository"] == repository and r["digest"] == digest

            # The bridge got the proxy's notification of the pull and published it.
            pulled_ids = {r["event_id"] for r in pulled.until("ManifestPulled", ours, timeout=60)}
            # The fetcher completed it in the cache...
            cached_events = cached.until("ImageCached", ours, timeout=180)
            assert {r["caused_by"] for r in cached_events} <= pulled_ids
            # ...and the scanner had the real Clair index it (a new base layer: Clair fetches it from the cache).
            (scan,) = scanned.until("ImageScanned", ours, timeout=300)
            assert scan["caused_by"] in {r["event_id"] for r in cached_events}
            assert (scan["state"], scan["scanner"], scan["packages"]) == ("indexed", "clair", DEBIAN_PACKAGES), scan
            assert scan["vulnerabilities"]["unknown"] == 1, scan

            # The ServiceMonitors scrape each process's own metrics: its counters moved with this pull.
            expected = {
                "bridge": ("layerfill_bridge_events_total", {"source": "distribution", "outcome": "published"}),
                "fetcher": ("layerfill_fetcher_events_total", {"outcome": "complete"}),
                "scanner": ("layerfill_scanner_scans_total", {"state": "indexed"}),
            }
            services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
            monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
            assert {m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for m in monitors} == set(
                COMPONENTS
            )
            for monitor in monitors:
                component = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
                (endpoint,) = monitor["spec"]["endpoints"]
                (svc_port,) = [
                    p for p in services[f"{FULLNAME}-{component}"]["spec"]["ports"] if p["name"] == endpoint["port"]
                ]
                name, labels = expected[component]
                value = _counter(by_name[component], endpoint["path"], svc_port["targetPort"], name, **labels)
                assert value >= 1, f"{component}: {name}{labels} = {value} at {endpoint}"

            # SIGTERM, as the kubelet sends it: each process stops cleanly within its pod's grace period.
            for pod in pods:
                pod.proc.send_signal(signal.SIGTERM)
            for pod in pods:
                try:
                    code = pod.proc.wait(timeout=pod.spec["terminationGracePeriodSeconds"])
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{pod.component} still running after its grace period\n{pod.log()}")
                # uvicorn (the bridge) re-raises the signal once its graceful shutdown is done: 143 in a container.
                assert code in ((0, -signal.SIGTERM) if pod.component == "bridge" else (0,)), pod.log()
            # ...and that shutdown flushed the bridge's producer first (the lifespan hook, not a skipped `finally`).
            assert "bridge stopped; producer flushed" in by_name["bridge"].log()
        finally:
            for reader in readers:
                reader.close()
            for pod in pods:
                pod.stop()
            delete_topics(kafka, [t.name for t in topics.all()])
