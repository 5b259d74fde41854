"""Fetcher routes for a test's repository prefix."""

from __future__ import annotations

from tests.support.stack import DevStack


def route(devstack: DevStack, prefix: str, sink: str = "distribution", upstream_url: str | None = None) -> dict:
    """Everything under `prefix` on the proxy registry comes from `upstream_url` (default: the upstream)."""
    return {
        "registry": devstack.proxy_registry,
        "repository_prefix": prefix,
        "strip_prefix": False,
        "upstream_url": upstream_url or f"http://{devstack.upstream_registry}",
        "sink": sink,
        "proxy_url": f"http://{devstack.proxy_registry}",
    }
