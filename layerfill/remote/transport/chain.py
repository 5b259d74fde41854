"""Composition of the transport chain, outermost first:

    Bearer -> Basic -> Retry -> Limit -> [Metered] -> Http

Auth sits outside Retry so each attempt of a request reuses one token, and a 401 is never retried
blindly; Limit sits inside Retry so a request sleeping before its next attempt holds no slot. Token
requests skip the auth layers (the realm gets credentials only where BearerTransport allows it) but are
retried and limited like any other request. Metered (only when a metrics route is given) sits innermost, so
it counts each attempt as the upstream sees it; the token chain's copy counts its requests as kind `token`.
"""

from __future__ import annotations

from collections.abc import Iterable

from requests.adapters import BaseAdapter

from layerfill.remote.credentials import Credentials
from layerfill.remote.transport.base import Origin
from layerfill.remote.transport.basic import BasicTransport
from layerfill.remote.transport.bearer import BearerTransport
from layerfill.remote.transport.http import HttpTransport
from layerfill.remote.transport.limit import HostLimiter, LimitTransport
from layerfill.remote.transport.metered import MeteredTransport
from layerfill.remote.transport.retry import RetryPolicy, RetryTransport
from layerfill.remote.transport.tokens import TokenCache


def build_transport(
    *,
    origin: Origin,
    credentials: Credentials | None,
    retry: RetryPolicy,
    limiter: HostLimiter,
    token_cache: TokenCache,
    credential_hosts: Iterable[str] = (),
    pool_maxsize: int = 8,
    metrics_route: str | None = None,
) -> BaseAdapter:
    http = HttpTransport(pool_maxsize=pool_maxsize)
    inner: BaseAdapter = http if metrics_route is None else MeteredTransport(http, metrics_route)
    plain = RetryTransport(LimitTransport(inner, limiter), retry)
    token_plain = plain
    if metrics_route is not None:
        token_plain = RetryTransport(
            LimitTransport(MeteredTransport(http, metrics_route, kind="token"), limiter), retry
        )
    authed: BaseAdapter = BasicTransport(plain, origin, credentials) if credentials is not None else plain
    return BearerTransport(
        authed,
        origin=origin,
        token_transport=token_plain,
        cache=token_cache,
        credentials=credentials,
        credential_hosts=credential_hosts,
    )
