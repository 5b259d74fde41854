"""Clair v4 in combo mode (indexer + matcher + notifier), offline: no updaters reach the network."""

from __future__ import annotations

import yaml

from .base import Service, http_ok


class Clair(Service):
    name = "clair"

    @property
    def endpoint(self) -> str:
        return f"http://{self.ctx.host}:{self.ctx.ports.clair}"

    def config(self) -> dict:
        c = self.ctx
        conn = f"host={c.host} port={c.ports.postgres} user=postgres dbname=clair sslmode=disable"
        return {
            "http_listen_addr": f"{c.host}:{c.ports.clair}",
            "introspection_addr": f"{c.host}:{c.ports.clair_introspection}",
            "log_level": "info",
            "indexer": {"connstring": conn, "migrations": True, "airgap": True, "scanlock_retry": 10},
            "matcher": {
                "connstring": conn,
                "migrations": True,
                "disable_updaters": True,
                "max_conn_pool": 20,
            },
            "updaters": {"sets": []},
            "notifier": {
                "connstring": conn,
                "migrations": True,
                "delivery_interval": "1m",
                "poll_interval": "5m",
            },
            "metrics": {"name": "prometheus"},
        }

    def start(self) -> None:
        cfg = self.ctx.paths.data / "clair.yaml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.ctx.paths.data)}
        self.process.start([str(self.ctx.paths.bin / "clair"), "-conf", str(cfg), "-mode", "combo"], env=env)

    def healthy(self) -> bool:
        return http_ok(f"http://{self.ctx.host}:{self.ctx.ports.clair_introspection}/readyz")

    def env(self) -> dict[str, str]:
        return {"LAYERFILL_SCANNER__CLAIR_URL": self.endpoint}
