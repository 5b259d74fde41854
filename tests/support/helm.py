"""Render the Helm chart with the pinned helm binary and turn its output into what a pod would see."""

from __future__ import annotations

import base64
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerfill.devstack.paths import default_paths

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "layerfill"
EXAMPLES = sorted((REPO / "helm" / "examples").glob("*.yaml"))
RELEASE = "lf"


def helm_binary() -> str:
    """The helm that devstack/install.py pins (`layerfill devstack up` installs it), else one on PATH."""
    pinned = default_paths().bin / "helm"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("helm")
    if not found:
        raise RuntimeError("helm is not installed: run `layerfill devstack up` (devstack/install.py installs it)")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def render(*values_files: Path) -> list[dict[str, Any]]:
    argv = ["template", RELEASE, str(CHART), "--namespace", "layerfill"]
    for f in values_files:
        argv += ["-f", str(f)]
    res = helm(*argv)
    if res.returncode != 0:
        raise AssertionError(f"helm template failed:\n{res.stderr}")
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"no {kind} {name!r} rendered; have {[(o['kind'], o['metadata']['name']) for o in objects]}")


@dataclass
class PodView:
    """One container of a rendered workload as the kubelet would start it: its env and its config file."""

    env: dict[str, str]
    config_yaml: str


def pod_view(
    objects: list[dict[str, Any]],
    pod_spec: dict[str, Any],
    container: str,
    pod_name: str,
    external_secrets: dict[str, dict[str, str]] | None = None,
) -> PodView:
    """Resolve `container`'s env (secretKeyRef from rendered or given Secrets, fieldRef metadata.name) and the
    ConfigMap its `config` volume names."""
    secrets = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
        for o in objects
        if o["kind"] == "Secret"
    }
    secrets.update(external_secrets or {})
    (spec,) = [c for c in pod_spec.get("initContainers", []) + pod_spec["containers"] if c["name"] == container]
    env: dict[str, str] = {}
    for var in spec["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name", source
            env[var["name"]] = pod_name
            continue
        ref = source["secretKeyRef"]
        data = secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            raise AssertionError(f"{var['name']}: Secret {ref['name']!r} key {ref['key']!r} is not available")
        env[var["name"]] = data[ref["key"]]
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == "config"]
    config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
    return PodView(env=env, config_yaml=config_map["data"]["config.yaml"])
