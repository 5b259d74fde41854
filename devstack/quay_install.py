"""Install a pinned Quay (not on PyPI) from the archives in `../shared/quay/` next to the checkout (or
`LAYERFILL_QUAY_DIST`): checksums verified, unpacked and given a Python 3.12 venv under the cache dir, stamped
so a second `up --with quay` installs nothing. Quay's three `git+https` requirements come from local archives."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import Paths, _repo_root

QUAY_COMMIT = "ffba0c70"
QUAY_ARCHIVE = f"quay-{QUAY_COMMIT}.tar.gz"
# requirements.txt names these as git+https URLs; the archives of the same name replace them.
LOCAL_REQUIREMENTS = {
    "aniso8601": "aniso8601-fake",
    "py-bitbucket": "py-bitbucket",
    "supervisor-stdout": "supervisor-stdout",
}
QUAY_APT = ["redis-server", "libldap2-dev", "libsasl2-dev", "libpq-dev", "libxmlsec1-dev"]
PYTHON312 = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"


class QuayInstallError(RuntimeError):
    pass


def dist_dir() -> Path:
    explicit = os.environ.get("LAYERFILL_QUAY_DIST")
    return Path(explicit) if explicit else (_repo_root().parent / "shared" / "quay").resolve()


def read_sums(text: str) -> dict[str, str]:
    """`sha256  name` lines -> {name: sha256}."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def local_requirements(text: str, deps: Path) -> str:
    """requirements.txt with each git+https line of LOCAL_REQUIREMENTS replaced by its unpacked directory."""
    lines = []
    for line in text.splitlines():
        name = line.split("@", 1)[0].strip().lower() if "git+" in line else None
        if name in LOCAL_REQUIREMENTS:
            line = f"{name} @ file://{deps / LOCAL_REQUIREMENTS[name]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class QuayInstaller:
    paths: Paths
    log: Callable[[str], None] = print

    @property
    def home(self) -> Path:
        return self.paths.cache / "quay" / QUAY_COMMIT

    @property
    def source(self) -> Path:
        return self.home / "quay"

    @property
    def python(self) -> Path:
        return self.home / "venv" / "bin" / "python"

    def _stamp(self) -> Path:
        return self.paths.cache / "stamps" / "quay"

    def installed(self) -> bool:
        stamp = self._stamp()
        return stamp.exists() and stamp.read_text().strip() == QUAY_COMMIT and self.python.exists()

    def _run(self, argv: list[str], **kw) -> None:
        res = subprocess.run(argv, capture_output=True, text=True, **kw)
        if res.returncode != 0:
            raise QuayInstallError(
                f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-4000:]}"
            )

    def apt(self) -> None:
        from .install import _dpkg_installed

        missing = [p for p in QUAY_APT if not _dpkg_installed(p)]
        if not missing:
            return
        if os.geteuid() != 0:
            raise QuayInstallError(f"Debian packages missing and not root: apt-get install {' '.join(missing)}")
        self.log(f"installing Debian packages for Quay: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        self._run(["apt-get", "update", "-qq"], env=env)
        self._run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)

    def verify(self, dist: Path) -> None:
        sums_file = dist / "SHA256SUMS"
        if not sums_file.is_file():
            raise QuayInstallError(f"no Quay archives at {dist} (SHA256SUMS missing); set LAYERFILL_QUAY_DIST")
        sums = read_sums(sums_file.read_text())
        for name in [QUAY_ARCHIVE, *(f"{d}.tar.gz" for d in LOCAL_REQUIREMENTS.values())]:
            if name not in sums:
                raise QuayInstallError(f"{sums_file} has no checksum for {name}")
            h = hashlib.sha256()
            with open(dist / name, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != sums[name]:
                raise QuayInstallError(f"{dist / name}: sha256 {h.hexdigest()} != {sums[name]} in SHA256SUMS")

    def install(self) -> None:
        self.apt()
        if self.installed():
            return
        dist = dist_dir()
        self.verify(dist)
        if not PYTHON312.exists():
            raise QuayInstallError(f"Quay needs Python 3.12: {PYTHON312} is missing (pyenv install 3.12.1)")
        self.log(f"installing Quay {QUAY_COMMIT} under {self.home} (builds psycopg2/python-ldap: 2-3 minutes)")
        shutil.rmtree(self.home, ignore_errors=True)
        deps = self.home / "deps"
        deps.mkdir(parents=True)
        with tarfile.open(dist / QUAY_ARCHIVE) as tf:
            tf.extractall(self.home, filter="data")
        for d in LOCAL_REQUIREMENTS.values():
            with tarfile.open(dist / f"{d}.tar.gz") as tf:
                tf.extractall(deps, filter="data")
        reqs = self.home / "requirements.txt"
        reqs.write_text(local_requirements((self.source / "requirements.txt").read_text(), deps))
        self._run([str(PYTHON312), "-m", "venv", str(self.home / "venv")])
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        self._run([*pip, "-U", "pip", "wheel"])
        self._run([*pip, "-r", str(reqs)], cwd=self.home)
        self._stamp().parent.mkdir(parents=True, exist_ok=True)
        self._stamp().write_text(QUAY_COMMIT)
