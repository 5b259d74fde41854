"""PostgreSQL 15 from Debian's package, run as the `postgres` user (it refuses to run as root)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

from .base import Service, ServiceError, port_open

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DATABASES = ("clair", "layerfill")


def _traversable_by_others(path: Path) -> bool:
    return all(not (p.exists() and not p.stat().st_mode & stat.S_IXOTH) for p in [path, *path.parents])


class Postgres(Service):
    name = "postgres"

    @property
    def endpoint(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.postgres}"

    def data_dir(self) -> Path:
        # The postgres user must reach its data dir; a state dir under a private home would not do.
        preferred = self.ctx.paths.data / "postgres"
        if _traversable_by_others(self.ctx.paths.data):
            return preferred
        tag = hashlib.sha256(str(self.ctx.paths.state).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"layerfill-devstack-{tag}" / "postgres"

    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def start(self) -> None:
        if self.process.pid():
            return
        data = self.data_dir()
        user = self._user()
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if user:
                shutil.chown(data, user, user)
                shutil.chown(data.parent, user, user) if data.parent != self.ctx.paths.data else None
            res = subprocess.run(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                capture_output=True,
                text=True,
                user=user,
            )
            if res.returncode != 0:
                raise ServiceError(f"initdb failed: {res.stdout}{res.stderr}")
        self.process.log_file.touch()
        if user:
            shutil.chown(self.process.log_file, user, user)
        argv = [
            str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.ctx.ports.postgres),
            "-c", f"listen_addresses={self.ctx.host}", "-c", f"unix_socket_directories={data}",
            "-c", "max_connections=200", "-c", "fsync=off",
        ]  # fmt: skip
        self.process.start(argv, user=user, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})

    def _connect(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(
            host=self.ctx.host, port=self.ctx.ports.postgres, user="postgres", dbname=dbname, connect_timeout=2,
            autocommit=True,
        )  # fmt: skip

    def healthy(self) -> bool:
        if not port_open(self.ctx.host, self.ctx.ports.postgres):
            return False
        try:
            with self._connect() as conn:
                conn.execute("select 1")
            return True
        except Exception:
            return False

    def after_healthy(self) -> None:
        with self._connect() as conn:
            have = {r[0] for r in conn.execute("select datname from pg_database")}
            for db in DATABASES:
                if db not in have:
                    conn.execute(f'create database "{db}"')

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://postgres@{self.endpoint}/{db}"

    def env(self) -> dict[str, str]:
        return {
            "LAYERFILL_DEVSTACK_POSTGRES_URL": self.url("layerfill"),
            # Every layerfill process and command run with this env file shares one state DB, whatever the
            # current directory (the default is a SQLite file in the current directory).
            "LAYERFILL_STATE__DATABASE_URL": self.url("layerfill"),
        }
