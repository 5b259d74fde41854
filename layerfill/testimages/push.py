"""Push OCI layouts to a registry with skopeo (no container engine needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from layerfill.oci.reference import validate_registry, validate_repository, validate_tag
from layerfill.testimages.layout import read_tags

DEFAULT_SKOPEO = "/usr/bin/skopeo"


class PushError(RuntimeError):
    """skopeo is missing or failed; the message carries its stderr."""


@dataclass(frozen=True, slots=True)
class Layout:
    repository: str
    path: Path
    tags: tuple[str, ...]


def skopeo_binary() -> str:
    found = shutil.which("skopeo") or (DEFAULT_SKOPEO if os.access(DEFAULT_SKOPEO, os.X_OK) else None)
    if found is None:
        raise PushError("skopeo not found: install it (apt-get install -y skopeo)")
    return found


def run_skopeo_bytes(args: list[str], *, timeout: float = 900) -> bytes:
    """Run skopeo with `args`; return stdout unaltered, raise PushError with stderr on failure."""
    # --insecure-policy: a layout we just built needs no signature policy, and the host may have no
    # /etc/containers/policy.json at all.
    command = [skopeo_binary(), "--insecure-policy", *args]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PushError(f"skopeo {args[0]} timed out after {timeout}s") from exc
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", errors="replace").strip()
        raise PushError(f"skopeo {' '.join(args)} failed ({done.returncode}): {stderr}")
    return done.stdout


def run_skopeo(args: list[str], *, timeout: float = 900) -> str:
    return run_skopeo_bytes(args, timeout=timeout).decode("utf-8", errors="replace")


def push_image(
    layout_dir: Path,
    tag: str,
    registry: str,
    repository: str,
    *,
    dest_tag: str | None = None,
    tls_verify: bool = False,
    dest_format: str | None = None,
    timeout: float = 900,
) -> str:
    """`skopeo copy --all oci:<dir>:<tag> docker://<registry>/<repository>:<dest_tag>`; returns the dest ref.

    `dest_format` (`v2s2` or `oci`) asks skopeo to convert manifests, e.g. to seed Docker media types.
    """
    validate_tag(tag)
    if ":" in str(layout_dir):
        raise PushError(f"layout path {layout_dir} contains ':', which skopeo's oci: transport cannot express")
    if dest_format not in (None, "oci", "v2s2"):
        raise ValueError(f"invalid dest_format {dest_format!r}: expected 'oci' or 'v2s2'")
    dest = f"{validate_registry(registry)}/{validate_repository(repository)}:{validate_tag(dest_tag or tag)}"
    args = ["copy", "--all", f"--dest-tls-verify={'true' if tls_verify else 'false'}"]
    if dest_format:
        args += ["--format", dest_format]
    args += [f"oci:{Path(layout_dir)}:{tag}", f"docker://{dest}"]
    run_skopeo(args, timeout=timeout)
    return dest


def find_layouts(root: Path) -> list[Layout]:
    """Every OCI layout under `root`; its repository is its path relative to `root`."""
    root = Path(root)
    layouts = []
    for marker in sorted(root.rglob("oci-layout")):
        path = marker.parent
        if path == root:
            continue
        repository = validate_repository(path.relative_to(root).as_posix())
        layouts.append(Layout(repository, path, tuple(sorted(read_tags(path)))))
    return layouts


def push_tree(root: Path, registry: str, *, tls_verify: bool = False, dest_format: str | None = None) -> list[str]:
    """Push every tag of every layout under `root` (as `build` wrote it); returns the refs pushed."""
    layouts = find_layouts(root)
    if not layouts:
        raise PushError(f"no OCI layouts under {root}")
    pushed = []
    for layout in layouts:
        for tag in layout.tags:
            pushed.append(
                push_image(
                    layout.path, tag, registry, layout.repository, tls_verify=tls_verify, dest_format=dest_format
                )
            )
    return pushed


def inspect_raw(image: str, *, tls_verify: bool = False) -> bytes:
    """Raw manifest bytes of `image` (a skopeo transport reference such as `oci:DIR:TAG`)."""
    args = ["inspect", "--raw"]
    if image.startswith("docker://"):
        args.append(f"--tls-verify={'true' if tls_verify else 'false'}")
    return run_skopeo_bytes([*args, image])
