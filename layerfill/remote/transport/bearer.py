"""Docker/OCI registry token auth (the flow of distribution's token spec, Docker Hub included).

On a 401 from the upstream carrying `WWW-Authenticate: Bearer realm=..,service=..,scope=..`, fetch a token
with `GET realm?service=..&scope=..` (anonymously, or with Basic credentials), accept `token` or
`access_token` and `expires_in` (default 60 s), and send the request again with `Authorization: Bearer`.
Tokens are cached by (realm, service, scope, identity) and shared by all threads; once a realm is known,
requests for a repository path carry the cached `repository:<name>:pull` token up front.

Trust choices:
- The realm host is not restricted by routing: it is the configured upstream's own answer. It must be an
  absolute http(s) URL without userinfo.
- The upstream's credentials go to the realm only if its host name equals the upstream's host name
  (any port: a registry and its token service often share a host), or the route lists the realm host in
  `credential_hosts` (Docker Hub: `auth.docker.io`). Never over plain http when the upstream is https.
  Otherwise the token is requested anonymously, and a refusal says the credentials were withheld.
- Bearer tokens are attached only to requests for the upstream's own origin, never to redirects.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests import PreparedRequest, Response
from requests.adapters import BaseAdapter

from layerfill.remote.credentials import Credentials
from layerfill.remote.errors import Unauthorized, UpstreamError, error_for_status
from layerfill.remote.transport.base import Origin, WrappingTransport, discard, read_capped, with_header
from layerfill.remote.transport.challenge import Challenge, find_challenge, pull_scope_for_path
from layerfill.remote.transport.redact import get_logger, redact_url
from layerfill.remote.transport.retry import retry_after_of
from layerfill.remote.transport.tokens import DEFAULT_EXPIRES_IN, Token, TokenCache, TokenKey

log = get_logger(__name__)

MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024


def normalize_credential_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Lower-cased host names; ports, schemes and paths are refused so the list means what it says."""
    normalized = set()
    for host in hosts:
        if not isinstance(host, str) or not host or any(c in host for c in ":/@ "):
            raise ValueError(f"credential_hosts entries must be bare host names, got {host!r}")
        normalized.add(host.lower())
    return frozenset(normalized)


class BearerTransport(WrappingTransport):
    def __init__(
        self,
        inner: BaseAdapter,
        *,
        origin: Origin,
        token_transport: BaseAdapter,
        cache: TokenCache,
        credentials: Credentials | None = None,
        credential_hosts: Iterable[str] = (),
    ) -> None:
        super().__init__(inner)
        self.origin = origin
        self.token_transport = token_transport
        self.cache = cache
        self._credentials = credentials
        self._credential_hosts = normalize_credential_hosts(credential_hosts)
        # (realm, service) of the upstream's token server, learned from its first challenge.
        self._server: tuple[str, str] | None = None
        self._warned_realms: set[str] = set()
        self._lock = threading.Lock()

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        url = request.url or ""
        if "Authorization" in request.headers or Origin.of(url) != self.origin:
            return self.inner.send(request, **kwargs)
        path_scope = pull_scope_for_path(urlsplit(url).path)
        default_scopes = (path_scope,) if path_scope else ()
        sent_key: TokenKey | None = None
        token: str | None = None
        server = self._server
        if server is not None:
            sent_key = self._key(server[0], server[1], default_scopes)
            token = self.cache.get(sent_key)
        response = self.inner.send(self._authorized(request, token) if token else request, **kwargs)
        if response.status_code != 401:
            return response
        challenge = find_challenge(response.headers.get("WWW-Authenticate"), "bearer")
        if challenge is None:
            return response
        discard(response)
        if sent_key is not None and token is not None:
            self.cache.invalidate(sent_key, token)  # expired or revoked: never offer it again
        realm = self._realm(challenge, url)
        service = challenge.params.get("service", "")
        scopes = challenge.scopes or default_scopes
        self._server = (realm, service)
        key = self._key(realm, service, scopes)
        if token is not None:
            self.cache.invalidate(key, token)
        fresh = self.cache.get_or_fetch(key, lambda: self._fetch(realm, service, scopes, kwargs))
        return self.inner.send(self._authorized(request, fresh), **kwargs)

    def _key(self, realm: str, service: str, scopes: tuple[str, ...]) -> TokenKey:
        identity = self._credentials.username if self._may_send_credentials(realm) and self._credentials else ""
        return TokenKey(realm, service, " ".join(sorted(scopes)), identity)

    @staticmethod
    def _authorized(request: PreparedRequest, token: str) -> PreparedRequest:
        return with_header(request, "Authorization", f"Bearer {token}")

    def _realm(self, challenge: Challenge, url: str) -> str:
        realm = challenge.params.get("realm", "")
        parts = urlsplit(realm)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise UpstreamError("bearer challenge names a token realm that is not an http(s) URL", url=url)
        if parts.username is not None or parts.password is not None:
            raise UpstreamError("bearer challenge names a token realm with userinfo", url=url)
        return realm

    def _may_send_credentials(self, realm: str) -> bool:
        if self._credentials is None:
            return False
        parts = urlsplit(realm)
        if self.origin.scheme == "https" and parts.scheme.lower() != "https":
            return False
        host = (parts.hostname or "").lower()
        return host == self.origin.host or host in self._credential_hosts

    def _fetch(self, realm: str, service: str, scopes: tuple[str, ...], kwargs: dict[str, Any]) -> Token:
        params = ([("service", service)] if service else []) + [("scope", scope) for scope in scopes]
        prepared = requests.Request("GET", realm, params=params, headers={"Accept": "application/json"}).prepare()
        with_credentials = self._may_send_credentials(realm)
        if with_credentials and self._credentials is not None:
            prepared.headers["Authorization"] = self._credentials.authorization()
        elif self._credentials is not None:
            self._warn_withheld(realm)
        response = self.token_transport.send(prepared, **{**kwargs, "stream": True})
        status = response.status_code
        if status != 200:
            retry_after = retry_after_of(response)
            discard(response)
            if status in (401, 403):
                if with_credentials:
                    why = "token realm refused the credentials"
                elif self._credentials is not None:
                    why = (
                        "token realm refused anonymous access; credentials were withheld because the realm "
                        "host is neither the upstream host nor listed in credential_hosts"
                    )
                else:
                    why = "token realm refused anonymous access (no credentials configured)"
                raise Unauthorized(why, url=prepared.url, status=status)
            raise error_for_status(status, url=prepared.url, detail="token realm", retry_after=retry_after)
        body = read_capped(
            response,
            MAX_TOKEN_RESPONSE_BYTES,
            lambda seen: UpstreamError(f"token response larger than {MAX_TOKEN_RESPONSE_BYTES} bytes", url=realm),
        )
        return parse_token_response(body, realm)

    def _warn_withheld(self, realm: str) -> None:
        with self._lock:
            if realm in self._warned_realms:
                return
            self._warned_realms.add(realm)
        log.warning(
            "requesting an anonymous token from %s: credentials for %s are not sent to another host "
            "unless the route lists it in credential_hosts",
            redact_url(realm),
            self.origin,
        )

    def __repr__(self) -> str:
        return f"BearerTransport({self.inner!r}, origin={str(self.origin)!r})"


def parse_token_response(body: bytes, realm: str) -> Token:
    """The token of a realm's JSON answer: `token` or `access_token`, and `expires_in` seconds."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UpstreamError("token realm answered with invalid JSON", url=realm) from None
    if not isinstance(data, dict):
        raise UpstreamError("token realm answered with JSON that is not an object", url=realm)
    value = data.get("token") or data.get("access_token")
    if not isinstance(value, str) or not value:
        raise UpstreamError("token realm answer has neither 'token' nor 'access_token'", url=realm)
    expires_in = data.get("expires_in")
    valid = isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in > 0
    return Token(value, float(expires_in) if valid else DEFAULT_EXPIRES_IN)
