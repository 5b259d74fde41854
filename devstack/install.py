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
# Apache Avro (Java): the engine of `layerfill schemas check` (devstack/avro/AvroCompat.java).
AVRO_VERSION = "1.12.2"
# Kafka's console consumer with Apicurio's Avro deserializer (devstack/avro_console/pom.xml), for reading topics as
# a Kafka user would (README "Reading the topics with Avro tooling").
AVRO_CONSOLE_VERSION = "4.1.1-3.1.7"

# Go tools pinned by module version. Clair needs a special path: its module list endpoint is not served by
# the module proxy, so `go install mod@v` fails while `go mod download mod@v` works; we build from the source.
GO_TOOLS: dict[str, tuple[str, str]] = {
    "versitygw": ("github.com/versity/versitygw/cmd/versitygw", "v1.7.0"),
    "registry": ("github.com/distribution/distribution/v3/cmd/registry", "v3.1.1"),
    "regctl": ("github.com/regclient/regclient/cmd/regctl", "v0.11.7"),
    # Lints and renders the Helm chart in tests (tests/unit/test_helm_chart.py).
    "helm": ("helm.sh/helm/v3/cmd/helm", "v3.22.0"),
    # Sign/verify images and attach/discover SBOMs in the supply-chain e2e tests (issue 16).
    "cosign": ("github.com/sigstore/cosign/v2/cmd/cosign", "v2.6.5"),
    "oras": ("oras.land/oras/cmd/oras", "v1.3.6"),
    # Checks and unit-tests the chart's alerting rules (tests/unit/test_helm_monitoring.py). Prometheus tags its
    # Go module v0.<major*100+minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
    "promtool": ("github.com/prometheus/prometheus/cmd/promtool", "v0.316.0"),
}
CLAIR = ("github.com/quay/clair/v4", "v4.9.0", ["cmd/clair", "cmd/clairctl"])

# chromium: headless, for the status page's browser test (tests/e2e/test_status_page.py).
# graphviz: `dot` renders docs/img/architecture.svg from docs/architecture.dot (tests/unit/test_architecture_doc.py).
APT_PACKAGES = ["skopeo", "docker-registry", "postgresql-15", "postgresql-contrib", "chromium", "graphviz"]


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

    def avro_home(self) -> Path:
        return self.paths.cache / f"avro-{AVRO_VERSION}"

    def avro(self) -> Path:
        """Apache Avro's jars and their runtime dependencies; returns the folder that holds them."""
        lib = self.avro_home() / "lib"
        if self._done("avro", AVRO_VERSION) and lib.is_dir():
            return lib
        self.log(f"resolving Apache Avro {AVRO_VERSION} jars from Maven Central")
        pom = Path(__file__).parent / "avro" / "pom.xml"
        self._run(
            [
                "mvn", "-q", "-B", "-f", str(pom), f"-Davro.version={AVRO_VERSION}",
                "dependency:copy-dependencies", f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
            ]
        )  # fmt: skip
        self._mark("avro", AVRO_VERSION)
        return lib

    def avro_console(self) -> Path:
        """Jars of Kafka's console consumer plus Apicurio's Avro deserializer; returns the folder that holds them."""
        lib = self.paths.cache / f"avro-console-{AVRO_CONSOLE_VERSION}" / "lib"
        if self._done("avro-console", AVRO_CONSOLE_VERSION) and lib.is_dir():
            return lib
        self.log("resolving Kafka's console consumer and Apicurio's Avro deserializer from Maven Central")
        here = Path(__file__).parent / "avro_console"
        self._run(
            [
                "mvn", "-q", "-B", "-s", str(here / "settings.xml"), "-f", str(here / "pom.xml"),
                "dependency:copy-dependencies", f"-DoutputDirectory={lib}", "-DincludeScope=runtime",
            ]
        )  # fmt: skip
        self._mark("avro-console", AVRO_CONSOLE_VERSION)
        return lib

    def all(self) -> None:
        self.paths.ensure()
        self.apt()
        self.go_tools()
        self.kafka()
        self.apicurio()
        self.avro()
        self.avro_console()


def _dpkg_installed(pkg: str) -> bool:
    res = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return res.returncode == 0 and "install ok installed" in res.stdout
