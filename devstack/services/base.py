"""A devstack service: installed elsewhere, started as a plain local process, checked for health."""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod

from ..context import StackContext
from ..process import ManagedProcess


class ServiceError(RuntimeError):
    pass


class Service(ABC):
    name: str = ""
    optional: bool = False  # an optional service may fail to start without failing `up`

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx
        self.process = ManagedProcess(self.name, ctx.paths.run, ctx.paths.logs)

    @property
    @abstractmethod
    def endpoint(self) -> str: ...

    @abstractmethod
    def start(self) -> None:
        """Start without waiting for health (so services start in parallel)."""

    @abstractmethod
    def healthy(self) -> bool: ...

    def after_healthy(self) -> None:
        """One-off setup once the service answers (buckets, databases)."""
        return None

    def env(self) -> dict[str, str]:
        """Entries this service contributes to the stack's env file."""
        return {}

    def stop(self) -> bool:
        return self.process.stop()

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                self.after_healthy()
                return
            if self.process.pid() is None:
                raise ServiceError(f"{self.name} exited during start-up:\n{self.process.log_tail(30)}")
            time.sleep(0.5)
        raise ServiceError(f"{self.name} not healthy after {timeout:.0f}s:\n{self.process.log_tail(30)}")


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0, ok: tuple[int, ...] = (200,)) -> bool:
    import requests

    try:
        return requests.get(url, timeout=timeout).status_code in ok
    except requests.RequestException:
        return False
