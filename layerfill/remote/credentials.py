"""Upstream credentials: a username and a password that never shows up in a repr or a log."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from layerfill.remote.transport.redact import MASK, Secret, remember_secret


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret = field(repr=False)

    def __init__(self, username: str, password: str | Secret) -> None:
        if not isinstance(username, str) or not username:
            raise ValueError("credentials.username must be a non-empty string")
        if ":" in username:
            raise ValueError("credentials.username must not contain ':' (HTTP Basic cannot carry it)")
        if not isinstance(password, str | Secret):
            raise ValueError(f"credentials.password must be a string, got {type(password).__name__}")
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", password if isinstance(password, Secret) else Secret(password))
        remember_secret(self.basic_value())

    def basic_value(self) -> str:
        """The base64 part of an HTTP Basic Authorization header."""
        raw = f"{self.username}:{self.password.reveal()}".encode()
        return base64.b64encode(raw).decode("ascii")

    def authorization(self) -> str:
        return f"Basic {self.basic_value()}"

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password={MASK!r})"
