"""The Helm chart: lint, render with the default and example values, validate every object against the
Kubernetes schemas offline, reject bad values through values.schema.json, and feed the rendered config to
layerfill's own loader exactly as a pod would see it. The Containerfile, which cannot be built here (no container
engine): its final stage's invariants, the commands the chart runs in it, and the wheel its build context makes."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from layerfill.cli.main import app as cli_app
from layerfill.config import Route, Settings, load_settings
from layerfill.producers.bridge import create_app
from layerfill.serde.catalog import SchemaCatalog
from layerfill.state import head_revision
from tests.support.helm import (
    CHART,
    EXAMPLES,
    RELEASE,
    REPO,
    container_argv,
    copy_build_context,
    find,
    helm,
    image_spec,
    pod_view,
    render,
)

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.33.0"
# Custom resources: kubernetes-validate ships only the built-in kinds' schemas.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
FULLNAME = f"{RELEASE}-layerfill"
VALUE_SETS = [None, *EXAMPLES]
IDS = ["defaults", *(p.stem for p in EXAMPLES)]
# What the Secrets that examples/production.yaml names (created outside the chart) would hold.
PRODUCTION_SECRETS = {
    "layerfill-credentials": {
        "database-url": "postgresql://layerfill:pw@pg.internal:5432/layerfill",
        "s3-access-key": "AKIAEXAMPLE",
        "s3-secret-key": "s3-secret",
        "kafka-sasl-password": "sasl-secret",
        "schema-registry-basic-auth": "key:secret",
        "bridge-token": "token",
    },
    "layerfill-routes": {
        "routes.json": json.dumps([{"registry": "cache.internal.example.com", "upstream_url": "https://ghcr.io"}])
    },
}


def _render(values: Path | None) -> list[dict[str, Any]]:
    return render(values) if values else render()


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "values.yaml"
    f.write_text(text)
    return f


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_helm_lint(values: Path | None) -> None:
    argv = ["lint", str(CHART), "--strict"] + (["-f", str(values)] if values else [])
    res = helm(*argv)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_rendered_objects_match_kubernetes_schemas(values: Path | None) -> None:
    objects = _render(values)
    kinds = {o["kind"] for o in objects}
    assert {"ConfigMap", "Deployment", "Service", "Job"} <= kinds
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_missing_required_setting_fails_with_schema_message(tmp_path: Path) -> None:
    res = helm(
        "template", RELEASE, str(CHART), "-f", str(_write(tmp_path, "config:\n  kafka:\n    bootstrap_servers: null\n"))
    )
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr
    assert "at '/config/kafka': missing property 'bootstrap_servers'" in res.stderr


def test_database_url_required_without_existing_secret(tmp_path: Path) -> None:
    res = helm("template", RELEASE, str(CHART), "-f", str(_write(tmp_path, 'secrets:\n  databaseUrl: ""\n')))
    assert res.returncode != 0
    assert "at '/secrets/databaseUrl'" in res.stderr
    # With the credentials from an existing Secret the inline URL is not needed.
    ok = helm(
        "template",
        RELEASE,
        str(CHART),
        "-f",
        str(_write(tmp_path, 'secrets:\n  databaseUrl: ""\n  existingSecret: creds\n')),
    )
    assert ok.returncode == 0, ok.stderr


def test_credentials_in_config_are_rejected(tmp_path: Path) -> None:
    res = helm("template", RELEASE, str(CHART), "-f", str(_write(tmp_path, "config:\n  s3:\n    secret_key: oops\n")))
    assert res.returncode != 0
    assert "at '/config/s3/secret_key'" in res.stderr


def test_bad_route_is_rejected_by_the_schema(tmp_path: Path) -> None:
    text = "routes:\n  - registry: cache.example.com\n    upstream_url: ftp://upstream.example.com\n"
    res = helm("template", RELEASE, str(CHART), "-f", str(_write(tmp_path, text)))
    assert res.returncode != 0
    assert "at '/routes/0/upstream_url'" in res.stderr


def test_schema_route_fields_match_the_route_model() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["routes"]["items"]["properties"]) == set(Route.model_fields)


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_rendered_config_loads_in_layerfill(
    values: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _render(values)
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod_spec = deployment["spec"]["template"]["spec"]
        (container,) = pod_spec["containers"]
        pod_name = f"{deployment['metadata']['name']}-abc12"
        pod = pod_view(objects, pod_spec, container["name"], pod_name, PRODUCTION_SECRETS)
        assert pod.env["LAYERFILL_CONFIG"] == "/etc/layerfill/config.yaml"
        config_file = tmp_path / "config.yaml"
        config_file.write_text(pod.config_yaml)
        for name in [n for n in os.environ if n.startswith("LAYERFILL_")]:
            monkeypatch.delenv(name)
        for name, value in pod.env.items():
            monkeypatch.setenv(name, value)

        settings = load_settings(config_file=config_file)

        assert settings.bridge.host == "0.0.0.0"
        assert settings.state.database_url == pod.env["LAYERFILL_STATE__DATABASE_URL"]
        assert [r.registry for r in settings.routes] == [r["registry"] for r in json.loads(pod.env["LAYERFILL_ROUTES"])]
        port = container["ports"][0]["containerPort"]
        component = container["name"]
        if component == "fetcher":
            assert settings.fetcher.instance_id == pod_name
            assert settings.fetcher.health_port == port
        elif component == "scanner":
            assert settings.scanner.instance_id == pod_name
            assert settings.scanner.health_port == port
        else:
            assert settings.bridge.port == port


def test_production_example_wires_credentials_and_tls() -> None:
    objects = render(next(p for p in EXAMPLES if p.stem == "production"))
    assert not [o for o in objects if o["kind"] == "Secret" and not o["metadata"].get("annotations")]
    pod = pod_view(
        objects,
        find(objects, "Deployment", f"{FULLNAME}-fetcher")["spec"]["template"]["spec"],
        "fetcher",
        "p",
        PRODUCTION_SECRETS,
    )
    assert pod.env["LAYERFILL_KAFKA__SASL_PASSWORD"] == "sasl-secret"
    assert pod.env["LAYERFILL_SCHEMA_REGISTRY__BASIC_AUTH_USER_INFO"] == "key:secret"
    assert pod.env["LAYERFILL_KAFKA__SSL_CA_LOCATION"] == "/etc/layerfill/kafka-tls/ca.crt"
    assert len([o for o in objects if o["kind"] == "ServiceMonitor"]) == 3
    assert find(objects, "PrometheusRule", FULLNAME)["metadata"]["labels"]["release"] == "prometheus"
    assert find(objects, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert find(objects, "Ingress", f"{FULLNAME}-bridge")["spec"]["ingressClassName"] == "nginx"


def test_credentials_stay_out_of_config_maps() -> None:
    example = next(p for p in EXAMPLES if p.stem == "small-cluster")
    objects = render(example)
    text = example.read_text()
    for secret in ["change-me", "dockerhub-access-token", "a-long-random-token"]:
        assert secret in text
        for cm in (o for o in objects if o["kind"] == "ConfigMap"):
            assert secret not in json.dumps(cm), f"{secret!r} leaked into ConfigMap {cm['metadata']['name']}"


def test_fetcher_pod_is_restricted_and_stops_gracefully() -> None:
    objects = render()
    spec = find(objects, "Deployment", f"{FULLNAME}-fetcher")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert spec["terminationGracePeriodSeconds"] >= 120
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    instance = next(e for e in container["env"] if e["name"] == "LAYERFILL_FETCHER__INSTANCE_ID")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pdb = find(objects, "PodDisruptionBudget", f"{FULLNAME}-fetcher")
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "fetcher"


def test_setup_job_runs_before_install_and_upgrade_without_routes() -> None:
    objects = render()
    job = find(objects, "Job", f"{FULLNAME}-setup")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["topics", "ensure"]
    assert "upgrade" in spec["initContainers"][0]["command"][-1]
    # The hook's own ConfigMap and Secret exist before the Job (lower weight): the release's do not yet.
    for kind in ("ConfigMap", "Secret"):
        name = f"{FULLNAME}-setup" if kind == "ConfigMap" else f"{FULLNAME}-secrets-setup"
        assert int(find(objects, kind, name)["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    pod = pod_view(objects, spec, "topics", "setup")
    assert "LAYERFILL_ROUTES" not in pod.env
    assert pod.env["LAYERFILL_STATE__DATABASE_URL"].startswith("postgresql://")


# -- what the rendered pods run, and where they listen ---------------------------------------------------------------


def _containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload/container, container) for every container of every Deployment and Job."""
    out = []
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            spec = o["spec"]["template"]["spec"]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                out.append((f"{o['kind']} {o['metadata']['name']}/{c['name']}", c))
    return out


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_rendered_commands_exist_in_the_image(values: Path | None) -> None:
    image = image_spec()
    containers = _containers(_render(values))
    assert containers
    for where, container in containers:
        argv = container_argv(container, image)
        if argv[0] == "layerfill":
            res = CliRunner().invoke(cli_app, [*argv[1:], "--help"])
            assert res.exit_code == 0, f"{where}: `{' '.join(argv)}` is no layerfill command:\n{res.output}"
            continue
        # The migration one-liner: it compiles and every name it imports exists.
        assert argv[:2] == ["python", "-c"], f"{where}: unexpected command {argv}"
        tree = ast.parse(argv[2])
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module or "")
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"


@pytest.mark.parametrize("values", VALUE_SETS, ids=IDS)
def test_probes_services_monitors_and_ingress_resolve_to_served_ports(values: Path | None) -> None:
    objects = _render(values)
    # The bridge's own routes (the publisher is never called here).
    bridge_routes = {r.path: r.methods or set() for r in create_app(Settings(), publisher=cast(Any, object())).routes}
    deployments = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objects if o["kind"] == "Deployment"
    }
    container_ports: dict[str, dict[str, int]] = {}
    for component, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        container_ports[component] = ports
        for probe in ("livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert get["port"] in ports, f"{component} {probe} names port {get['port']!r}; container has {ports}"
            if component == "bridge":
                assert get["path"] in bridge_routes, f"bridge serves no {get['path']}"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for svc in services.values():
        component = svc["spec"]["selector"]["app.kubernetes.io/component"]
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports[component], f"Service {svc['metadata']['name']}: {port}"
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        component = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        (svc,) = [s for s in services.values() if s["spec"]["selector"]["app.kubernetes.io/component"] == component]
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}, endpoint
            if component == "bridge":
                assert endpoint["path"] in bridge_routes
    posts = {path for path, methods in bridge_routes.items() if "POST" in methods}
    for ingress in (o for o in objects if o["kind"] == "Ingress"):
        paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        for p in paths:
            assert p["backend"]["service"]["port"]["name"] in container_ports["bridge"]
            assert any(route.startswith(p["path"] + "/") for route in posts), f"{p['path']} leads to no endpoint"
        # Every notification endpoint is reachable from outside, and nothing else (/metrics stays internal).
        assert {r for r in posts if any(r.startswith(p["path"] + "/") for p in paths)} == posts
        assert not any("/metrics".startswith(p["path"]) for p in paths)


# -- the Containerfile -------------------------------------------------------------------------------------------------


def test_containerfile_final_stage_is_a_small_non_root_layerfill_image() -> None:
    image = image_spec()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    # The Python the package declares, in its slim variant.
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert image.base == f"python:{minimum}-slim"
    # A numeric non-root user:group, the same the chart's pods run as (runAsNonRoot needs a numeric USER).
    uid, gid = image.user.split(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, image.user
    pod = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    # The entrypoint is the package's console script; the devstack env file is never read in a pod; no bytecode is
    # written onto the read-only root filesystem.
    assert image.entrypoint == ["layerfill"]
    assert pyproject["project"]["scripts"]["layerfill"] == "layerfill.cli.main:app"
    assert image.env["LAYERFILL_ENV_FILE"] == "none"
    assert image.env["PYTHONDONTWRITEBYTECODE"] == "1"


def _source_files() -> set[str]:
    """Every file the installed package must hold: all files under the package-dir mapping, at their import path."""
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = set()
    for package, directory in mapping.items():
        root = REPO / directory
        for f in root.rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                out.add("/".join([*package.split("."), *f.relative_to(root).parts]))
    return out


def test_image_build_context_makes_a_wheel_that_runs_layerfill(tmp_path: Path) -> None:
    """What the Containerfile's build stage does (`pip wheel .` on the context .containerignore leaves), then the
    installed wheel alone (no source tree, no editable install) loads every process, the schemas and migrations."""
    context = tmp_path / "context"
    copy_build_context(context)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(context), "-w", str(wheels)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("layerfill-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = z.read(entry_points).decode()
    missing = sorted(_source_files() - names)
    assert not missing, f"not in the wheel (a package missing from pyproject's `packages`/package-data?): {missing}"
    assert "layerfill = layerfill.cli.main:app" in scripts

    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # -S: no site processing, so neither the editable install's finder nor the source tree is importable; the
    # dependencies come from this venv's site-packages, after the wheel's copy of layerfill.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LAYERFILL_ENV_FILE": "none",
        "PYTHONPATH": f"{site}{os.pathsep}{sysconfig.get_paths()['purelib']}",
    }
    probe = f"""
import json, layerfill
import layerfill.producers.bridge, layerfill.consumers.fetcher.service, layerfill.consumers.scanner.service
from layerfill.serde.catalog import SchemaCatalog
from layerfill.state import current_revision, head_revision, upgrade
url = "sqlite:///{tmp_path / "state.db"}"
upgrade(url)
print(json.dumps({{"file": layerfill.__file__, "schemas": list(SchemaCatalog().names), "head": head_revision(),
                  "migrated": current_revision(url)}}))
"""
    res = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert Path(seen["file"]).is_relative_to(site)
    assert seen["schemas"] == list(SchemaCatalog().names)
    assert seen["head"] == seen["migrated"] == head_revision()
    helps = {}
    for command in (("run",), ("topics", "ensure")):
        cli = subprocess.run(
            [sys.executable, "-S", "-m", "layerfill.cli.main", *command, "--help"],
            env={**env, "COLUMNS": "200"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        helps[command] = cli.stdout
    assert all(f" {process} " in helps[("run",)] for process in ("bridge", "fetcher", "scanner")), helps[("run",)]
