"""CNCF distribution, as the upstream (filesystem storage) and as the pull-through proxy cache (S3 storage,
notifications to the layerfill bridge). v3.1.1 (go install) by default, Debian's 2.8.2 by flag."""

from __future__ import annotations

import json
import os
import shutil

import yaml

from .base import Service, http_ok

NOTIFY_PATH = "/v1/notifications/distribution"


class _Registry(Service):
    port_attr = ""

    @property
    def port(self) -> int:
        return getattr(self.ctx.ports, self.port_attr)

    @property
    def endpoint(self) -> str:
        return f"http://{self.ctx.host}:{self.port}"

    def binary(self) -> str:
        if self.ctx.distribution == "2.8":
            return shutil.which("docker-registry") or "/usr/bin/docker-registry"
        return str(self.ctx.paths.bin / "registry")

    def config(self) -> dict:
        raise NotImplementedError

    def start(self) -> None:
        cfg = self.ctx.paths.data / f"{self.name}.yml"
        cfg.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_", "OTEL_"))}
        # 2.8's S3 driver panics at start-up when AWS_CA_BUNDLE is set (it is on these machines).
        env["OTEL_TRACES_EXPORTER"] = "none"
        self.process.start([self.binary(), "serve", str(cfg)], env=env)

    def healthy(self) -> bool:
        return http_ok(f"{self.endpoint}/v2/")

    def _base(self) -> dict:
        return {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "http": {
                "addr": f"{self.ctx.host}:{self.port}",
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }


class UpstreamRegistry(_Registry):
    name = "upstream"
    port_attr = "upstream"

    def config(self) -> dict:
        cfg = self._base()
        cfg["storage"] = {
            "filesystem": {"rootdirectory": str(self.ctx.paths.data / "upstream")},
            "delete": {"enabled": True},
        }
        return cfg

    def env(self) -> dict[str, str]:
        return {"LAYERFILL_DEVSTACK_UPSTREAM_URL": self.endpoint}


class ProxyRegistry(_Registry):
    name = "proxy"
    port_attr = "proxy"

    def config(self) -> dict:
        c = self.ctx
        cfg = self._base()
        s3 = {
            "accesskey": c.secrets.s3_access_key,
            "secretkey": c.secrets.s3_secret_key,
            "region": "us-east-1",
            "regionendpoint": f"http://{c.host}:{c.ports.s3}",
            "bucket": c.s3_bucket,
            "rootdirectory": c.proxy_root,
            "secure": False,
            "v4auth": True,
        }
        if c.distribution == "v3":
            s3["forcepathstyle"] = True  # v3's aws-sdk-go-v2 defaults to virtual-host style
        cfg["storage"] = {
            "s3": s3,
            "redirect": {"disable": True},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        }
        cfg["proxy"] = {"remoteurl": f"http://{c.host}:{c.ports.upstream}"}
        if c.distribution == "v3":
            cfg["proxy"]["ttl"] = "0"  # never expire: the devstack tests rely on content staying cached
        cfg["notifications"] = {
            "endpoints": [
                {
                    "name": "layerfill",
                    "url": f"{c.bridge_url}{NOTIFY_PATH}",
                    "headers": {"Authorization": [f"Bearer {c.secrets.bridge_token}"]},
                    "timeout": "15s",  # longer than the bridge's delivery_timeout_s, so a Kafka outage reaches the registry as 503
                    "threshold": 3,
                    "backoff": "1s",
                }
            ]
        }
        return cfg

    def env(self) -> dict[str, str]:
        return {
            "LAYERFILL_DEVSTACK_PROXY_URL": self.endpoint,
            "LAYERFILL_DEVSTACK_PROXY_REGISTRY": f"{self.ctx.host}:{self.port}",
            "LAYERFILL_DEVSTACK_DISTRIBUTION": self.ctx.distribution,
            "LAYERFILL_BRIDGE__PORT": str(self.ctx.ports.bridge),
            "LAYERFILL_BRIDGE__TOKEN": self.ctx.secrets.bridge_token,
            # The default route: everything pulled through the proxy comes from the devstack upstream.
            "LAYERFILL_ROUTES": "'" + json.dumps([self.default_route()]) + "'",
        }

    def default_route(self) -> dict:
        c = self.ctx
        return {
            "registry": f"{c.host}:{self.port}",
            "upstream_url": f"http://{c.host}:{c.ports.upstream}",
            "sink": "distribution",
            "proxy_url": self.endpoint,
        }
