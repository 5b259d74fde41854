"""cosign and oras as a user runs them, fully offline: a key pair made here, no transparency log, and local trust
material so cosign never asks sigstore's public TUF mirror (../shared/REFERENCE.md, "Signatures, attestations,
SBOMs"). Both talk plain HTTP to 127.0.0.1 registries only."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerfill.devstack.paths import default_paths

SBOM_TYPE = "application/spdx+json"
PASSWORD = "layerfill-test"


def tool(name: str) -> str:
    """The devstack's own build of `name` (devstack/install.py GO_TOOLS); it must be there."""
    path = default_paths().bin / name
    assert path.exists(), f"{path} missing: `layerfill devstack up` installs it"
    return str(path)


@dataclass
class Signer:
    """A cosign key pair and an environment in which cosign and oras reach nothing but 127.0.0.1."""

    workdir: Path
    name: str = "cosign"

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        trust = self.workdir / "trust"
        trust.mkdir(exist_ok=True)
        (self.workdir / "tuf").mkdir(exist_ok=True)
        (self.workdir / "docker").mkdir(exist_ok=True)
        if not (trust / "root.pem").exists():
            # Any certificate will do: with --key and no tlog, cosign only needs *some* local root to not fetch one.
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", str(trust / "root.key"), "-out", str(trust / "root.pem"), "-days", "2",
                 "-subj", "/CN=layerfill-test-root"],
                check=True, capture_output=True,
            )  # fmt: skip
        if not self.key.exists():
            res = self.cosign("generate-key-pair", "--output-key-prefix", self.name, cwd=self.workdir)
            assert res.returncode == 0, res.stderr

    @property
    def key(self) -> Path:
        return self.workdir / f"{self.name}.key"

    @property
    def pub(self) -> Path:
        return self.workdir / f"{self.name}.pub"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(
            COSIGN_PASSWORD=PASSWORD,
            COSIGN_YES="true",
            SIGSTORE_ROOT_FILE=str(self.workdir / "trust" / "root.pem"),
            SIGSTORE_REKOR_PUBLIC_KEY=str(self.pub) if self.pub.exists() else "",
            SIGSTORE_CT_LOG_PUBLIC_KEY_FILE=str(self.pub) if self.pub.exists() else "",
            TUF_ROOT=str(self.workdir / "tuf"),
            DOCKER_CONFIG=str(self.workdir / "docker"),  # no one's credentials, no credential helpers
            HOME=str(self.workdir),
        )
        return {k: v for k, v in env.items() if v != ""}

    def cosign(self, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([tool("cosign"), *args], env=self.env(), cwd=cwd or self.workdir,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def sign(self, ref: str, *, recursive: bool = False) -> subprocess.CompletedProcess:
        args = ["sign", "--key", str(self.key), "--tlog-upload=false", "--allow-insecure-registry",
                "--allow-http-registry", "--yes"]  # fmt: skip
        if recursive:
            args.append("--recursive")
        return self.cosign(*args, ref)

    def verify(self, ref: str) -> subprocess.CompletedProcess:
        return self.cosign("verify", "--key", str(self.pub), "--insecure-ignore-tlog=true", "--offline=true",
                           "--allow-insecure-registry", "--allow-http-registry", ref)  # fmt: skip

    def oras(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([tool("oras"), *args], env=self.env(), cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def attach_sbom(self, ref: str, content: bytes) -> subprocess.CompletedProcess:
        (self.workdir / "sbom.spdx.json").write_bytes(content)
        return self.oras("attach", "--plain-http", "--artifact-type", SBOM_TYPE, ref,
                         f"sbom.spdx.json:{SBOM_TYPE}")  # fmt: skip

    def discover(self, ref: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
        """`oras discover --format json`; the referrers it lists (empty when it failed)."""
        res = self.oras("discover", "--plain-http", "--format", "json", ref)
        if res.returncode != 0:
            return res, []
        doc = json.loads(res.stdout)
        return res, list(doc.get("referrers") or doc.get("manifests") or [])

    def pull(self, ref: str, out: Path) -> subprocess.CompletedProcess:
        return self.oras("pull", "--plain-http", "-o", str(out), ref)


def sbom_document(name: str) -> bytes:
    return json.dumps({"spdxVersion": "SPDX-2.3", "name": name, "SPDXID": "SPDXRef-DOCUMENT",
                       "packages": [{"name": name, "versionInfo": "1.0"}]}).encode()  # fmt: skip
