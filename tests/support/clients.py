"""Real OCI clients (skopeo, regctl) as a user would run them, plus checks of what they wrote."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path


def skopeo_pull(registry: str, repository: str, ref: str, layout: Path, tag: str | None = None,
                all_platforms: bool = False, arch: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """`skopeo copy docker://REG/REPO:REF oci:LAYOUT:TAG`. Blobs already in the layout are skipped: exactly the
    client behaviour that leaves a pull-through cache partial."""
    src = f"docker://{registry}/{repository}{'@' if ref.startswith('sha256:') else ':'}{ref}"
    argv = ["skopeo", "--insecure-policy"]
    if arch:
        argv += ["--override-arch", arch, "--override-os", "linux"]
    argv += ["copy", "--src-tls-verify=false"]
    if all_platforms:
        argv.append("--all")
    argv += [src, f"oci:{layout}:{tag or ref.replace(':', '-')}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def verify_layout_blobs(layout: Path) -> dict[str, int]:
    """Re-hash every blob in an OCI layout; return {digest: size}. Raises on any mismatch."""
    out = {}
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        h = hashlib.sha256()
        with blob.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == blob.name, f"blob {blob.name} hashes to {h.hexdigest()}"
        out[f"sha256:{blob.name}"] = blob.stat().st_size
    return out


def layout_manifest_digests(layout: Path) -> list[str]:
    return [m["digest"] for m in json.loads((layout / "index.json").read_text())["manifests"]]
