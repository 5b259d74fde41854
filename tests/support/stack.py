"""Access to the running devstack from tests: endpoints, settings, and start/stop for failure drills."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from layerfill.config.settings import Settings
from layerfill.devstack.context import StackContext
from layerfill.devstack.stack import Stack


@dataclass
class DevStack:
    stack: Stack

    @property
    def ctx(self) -> StackContext:
        return self.stack.ctx

    @property
    def upstream_registry(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.upstream}"

    @property
    def proxy_registry(self) -> str:
        return f"{self.ctx.host}:{self.ctx.ports.proxy}"

    @property
    def kafka(self) -> str:
        return self.stack.kafka.endpoint

    def settings(self, **overrides) -> Settings:
        os.environ["LAYERFILL_ENV_FILE"] = str(self.ctx.paths.env_file)
        return Settings(**overrides)


def ensure_up() -> DevStack:
    """Use the stack `layerfill devstack up` started; start it if it is not running (same code path)."""
    stack = Stack(log=lambda m: print(f"[devstack] {m}"))
    if not all(s.healthy or s.optional for s in stack.status()):
        stack.up(install=True)
    elif not stack.ctx.paths.env_file.exists():
        stack.write_env()
    return DevStack(stack)


def unique(prefix: str = "t") -> str:
    """A repository-name-safe unique component: the stack is shared by every test of a run."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"
