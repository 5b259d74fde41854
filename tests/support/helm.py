"""Render the Helm chart with the pinned helm binary and turn its output into what a pod would see; read the
Containerfile's final stage (what the kubelet combines a container's command/args with)."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from layerfill.devstack.paths import default_paths

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "layerfill"
CONTAINERFILE = REPO / "Containerfile"
CONTAINERIGNORE = REPO / ".containerignore"
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


@dataclass
class ImageSpec:
    """The final stage of the Containerfile: what a container of the image starts with."""

    base: str
    user: str
    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]


def image_spec(path: Path = CONTAINERFILE) -> ImageSpec:
    """Parse the last stage of a Containerfile (continuation lines joined, exec-form ENTRYPOINT/CMD)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = [line.strip().split(None, 1) for line in text.splitlines() if line.strip() and line[0] != "#"]
    last_from = max(i for i, (op, _) in enumerate(instructions) if op.upper() == "FROM")
    spec = ImageSpec(base="", user="root", env={}, entrypoint=[], cmd=[])
    for op, rest in instructions[last_from:]:
        op = op.upper()
        if op == "FROM":
            spec.base = rest.split()[0]
        elif op == "USER":
            spec.user = rest.strip()
        elif op == "ENV":
            spec.env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif op in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest)  # exec form only: the shell form would wrap the process in /bin/sh -c
            setattr(spec, op.lower(), value)
    return spec


def container_argv(container: dict[str, Any], image: ImageSpec) -> list[str]:
    """What the kubelet runs: `command` replaces the image's ENTRYPOINT (and drops its CMD), `args` its CMD."""
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    return [*image.entrypoint, *container.get("args", image.cmd)]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .containerignore pattern (Go filepath.Match plus `**`), anchored at the context root."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def copy_build_context(dest: Path, src: Path = REPO) -> None:
    """Copy what `COPY . .` would see: the context minus .containerignore (a path is out when it or any of its
    parent directories matches a pattern)."""
    lines = [ln.strip() for ln in CONTAINERIGNORE.read_text().splitlines()]
    patterns = [ln.strip("/") for ln in lines if ln and not ln.startswith("#")]
    if any(p.startswith("!") for p in patterns):
        raise NotImplementedError("exception patterns (!) are not emulated here")
    regexes = [_ignore_regex(p) for p in patterns]

    def ignore(directory: str, names: list[str]) -> set[str]:
        rel = Path(directory).relative_to(src)
        return {n for n in names if any(r.fullmatch((rel / n).as_posix().removeprefix("./")) for r in regexes)}

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)
