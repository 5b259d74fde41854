"""Clair v4 in combo mode (indexer + matcher + notifier), with nothing reaching the network:

- the only updater enabled, Debian's, reads a tiny local feed (clair_feed.py) that Clair's start brings up
  first, so the matcher answers with real vulnerability reports instead of 202;
- the RHEL scanners get empty local mapping files: by default they download Red Hat's mapping files at start-up,
  and without them the repository scanner fails every layer ("rhel: unable to create a mappingFile object"),
  so no new image could be indexed at all."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ..context import StackContext
from .base import Service, ServiceError, http_ok
from .clair_feed import VulnFeed


class Clair(Service):
    name = "clair"

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        self.feed = VulnFeed(ctx)

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
            "indexer": {
                "connstring": conn,
                "migrations": True,
                "airgap": True,
                "scanlock_retry": 10,
                "scanner": {
                    "repo": {"rhel-repository-scanner": {"repo2cpe_mapping_file": str(self.mapping_file("repo2cpe"))}},
                    "package": {
                        "rhel_containerscanner": {"name2repos_mapping_file": str(self.mapping_file("name2repos"))}
                    },
                },
            },
            "matcher": {"connstring": conn, "migrations": True, "max_conn_pool": 20},
            # Only the Debian updater, pointed at the local feed; it runs at start-up and then every period.
            "updaters": {"sets": ["debian"], "config": {"debian": self.feed.updater_config()}},
            "notifier": {
                "connstring": conn,
                "migrations": True,
                "delivery_interval": "1m",
                "poll_interval": "5m",
            },
            "metrics": {"name": "prometheus"},
        }

    def mapping_file(self, name: str) -> Path:
        return self.ctx.paths.data / "clair-mappings" / f"{name}.json"

    def start(self) -> None:
        # An empty mapping: no RHEL repository is known, which is true of this stack (its images are Debian).
        for name in ("repo2cpe", "name2repos"):
            path = self.mapping_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"data": {}}) + "\n")
        # The updater's first run happens at Clair's start-up: the feed must already answer.
        self.feed.start()
        deadline = time.monotonic() + 15
        while not self.feed.healthy():
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.feed.name} did not listen:\n{self.feed.process.log_tail(20)}")
            time.sleep(0.1)
        cfg = self.ctx.paths.data / "clair.yaml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.ctx.paths.data)}
        self.process.start([str(self.ctx.paths.bin / "clair"), "-conf", str(cfg), "-mode", "combo"], env=env)

    def healthy(self) -> bool:
        return self.feed.healthy() and http_ok(f"http://{self.ctx.host}:{self.ctx.ports.clair_introspection}/readyz")

    def stop(self) -> bool:
        stopped = self.process.stop()
        self.feed.stop()
        return stopped

    def env(self) -> dict[str, str]:
        return {"LAYERFILL_SCANNER__CLAIR_URL": self.endpoint}
