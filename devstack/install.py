"""Idempotent installers: Debian packages, Go tools, Maven artifacts. Everything lands in the cache dir
with a stamp file, so a second `up` (or a fresh clone on the same machine) installs nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import Paths

KAFKA_VERSION = "4.1.1"
APICURIO_VERSION = "3.0.9"

# Go tools pinned by module version. Clair needs a special path: its module list endpoint is not served by
# the module proxy, so `go install mod@v` fails while `go mod download mod@v` works; we build from the source.
GO_TOOLS: dict[str, tuple[str, str]] = {
    "versitygw": ("github.com/versity/versitygw/cmd/versitygw", "v1.7.0"),
    "registry": ("github.com/distribution/distribution/v3/cmd/registry", "v3.1.1"),
    "regctl": ("github.com/regclient/regclient/cmd/regctl", "v0.11.7"),
    # Lints and renders the Helm chart in tests (tests/unit/test_helm_chart.py).
    "helm": ("helm.sh/helm/v3/cmd/helm", "v3.22.0"),
}
CLAIR = ("github.com/quay/clair/v4", "v4.9.0", ["cmd/clair", "cmd/clairctl"])

# chromium: headless, for the status page's browser test (tests/e2e/test_status_page.py).
APT_PACKAGES = ["skopeo", "docker-registry", "postgresql-15", "postgresql-contrib", "chromium"]


class InstallError(RuntimeError):
    pass


@dataclass
class Installer:
    paths: Paths
    log: Callable[[str], None] = print

    # -- generic helpers ---------------------------------------------------------------------------
    def _run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise InstallError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-4000:]}")
        return res.stdout

    def _stamp(self, name: str) -> Path:
        return self.paths.cache / "stamps" / name

    def _done(self, name: str, version: str) -> bool:
        stamp = self._stamp(name)
        return stamp.exists() and stamp.read_text().strip() == version

    def _mark(self, name: str, version: str) -> None:
        stamp = self._stamp(name)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(version)

    def _go_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GOBIN"] = str(self.paths.bin)
        env.setdefault("GOFLAGS", "-mod=mod")
        return env

    # -- Debian packages -----------------------------------------------------------------------------
    def apt(self) -> None:
        missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
        if not missing:
            return
        if os.geteuid() != 0:
            raise InstallError(f"Debian packages missing and not root: apt-get install {' '.join(missing)}")
        self.log(f"installing Debian packages: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        self._run(["apt-get", "update", "-qq"], env=env)
        self._run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)

    # -- Go tools ------------------------------------------------------------------------------------
    def go_tools(self) -> None:
        for name, (pkg, version) in GO_TOOLS.items():
            if self._done(name, version) and (self.paths.bin / name).exists():
                continue
            self.log(f"go install {pkg}@{version}")
            self._run(["go", "install", f"{pkg}@{version}"], env=self._go_env())
            self._mark(name, version)
        self.clair()

    def clair(self) -> None:
        module, version, cmds = CLAIR
        names = [Path(c).name for c in cmds]
        if self._done("clair", version) and all((self.paths.bin / n).exists() for n in names):
            return
        self.log(f"building {module}@{version} from the module proxy source")
        env = self._go_env()
        info = json.loads(self._run(["go", "mod", "download", "-json", f"{module}@{version}"], env=env))
        with tempfile.TemporaryDirectory(prefix="clair-src-") as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(info["Dir"], src)
            for p in src.rglob("*"):
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o200)
            for cmd in cmds:
                self._run(["go", "build", "-o", str(self.paths.bin / Path(cmd).name), f"./{cmd}"], cwd=src, env=env)
        self._mark("clair", version)

    # -- Maven artifacts -----------------------------------------------------------------------------
    def kafka_home(self) -> Path:
        return self.paths.cache / f"kafka-{KAFKA_VERSION}"

    def kafka(self) -> None:
        home = self.kafka_home()
        if self._done("kafka", KAFKA_VERSION) and (home / "lib").is_dir():
            return
        self.log(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central")
        pom = Path(__file__).parent / "kafka" / "pom.xml"
        self._run(
            [
                "mvn", "-q", "-B", "-f", str(pom), f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies", f"-DoutputDirectory={home / 'lib'}", "-DincludeScope=runtime",
            ]
        )  # fmt: skip
        self._mark("kafka", KAFKA_VERSION)

    def apicurio_home(self) -> Path:
        return self.paths.cache / f"apicurio-{APICURIO_VERSION}"

    def apicurio_jar(self) -> Path:
        return self.apicurio_home() / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"

    def apicurio(self) -> None:
        if self._done("apicurio", APICURIO_VERSION) and self.apicurio_jar().exists():
            return
        self.log(f"resolving Apicurio Registry {APICURIO_VERSION} from Maven Central")
        downloads = self.paths.cache / "downloads"
        artifact = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
        self._run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={downloads}"])
        tarball = downloads / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        home = self.apicurio_home()
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        with tarfile.open(tarball) as tf:
            tf.extractall(home, filter="data")
        self._mark("apicurio", APICURIO_VERSION)

    def all(self) -> None:
        self.paths.ensure()
        self.apt()
        self.go_tools()
        self.kafka()
        self.apicurio()


def _dpkg_installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return res.returncode == 0 and "install ok installed" in res.stdout
