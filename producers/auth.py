"""Shared-secret check for incoming notifications. Registries send it as a static header: distribution as
`Authorization: Bearer <token>` (endpoint headers), Harbor as the raw `Authorization` value."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def authorized(headers: Mapping[str, str], token: str | None) -> bool:
    if not token:
        return True
    candidates = [headers.get("x-layerfill-token", "")]
    auth = headers.get("authorization", "")
    candidates.append(auth)
    if auth[:7].lower() == "bearer ":
        candidates.append(auth[7:].strip())
    expected = token.encode()
    # Constant-time, and every candidate is compared so timing does not reveal which header matched.
    results = [hmac.compare_digest(c.encode(), expected) for c in candidates]
    return any(results)
