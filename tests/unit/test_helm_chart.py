"""The Helm chart: lint, render with the default and example values, validate every object against the
Kubernetes schemas offline, reject bad values through values.schema.json, and feed the rendered config to
layerfill's own loader exactly as a pod would see it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from layerfill.config import Route, load_settings
from tests.support.helm import CHART, EXAMPLES, RELEASE, find, helm, pod_view, render

pytestmark = pytest.mark.unit

KUBERNETES_VERSION = "1.33.0"
# Custom resources: kubernetes-validate ships only the built-in kinds' schemas.
CUSTOM_KINDS = {"ServiceMonitor"}
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
