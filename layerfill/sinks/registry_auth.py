"""The Authorization header a reader outside layerfill (Clair) sends for a blob of a proxy registry (registry sink).

Clair sends the header it is given and does no token dance of its own. A registry that takes Basic credentials
(distribution with htpasswd) gets them as they are; one that answers `/v2/` with a Bearer challenge (Quay,
Harbor) gets a bearer token fetched from its realm with the route's credentials (Quay: a robot account's name
and token), scoped to pull the one repository. Tokens are reused until half their lifetime is left, so the
token Clair receives is always valid for the index request that follows. Credentials go only to a realm on the
proxy's own host, as in layerfill/remote/transport/bearer.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from layerfill.remote.credentials import Credentials
from layerfill.remote.transport.bearer import parse_token_response
from layerfill.remote.transport.challenge import Challenge, find_challenge

TIMEOUT_S = 15.0


class RegistryAuth:
    def __init__(self, session: requests.Session | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.http = session or requests.Session()
        self.clock = clock
        self._challenges: dict[str, Challenge | None] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float, float]] = {}  # -> (token, fetched, expires)
        self._lock = threading.Lock()

    def header(self, proxy_url: str, repository: str, creds: Credentials) -> str:
        challenge = self._challenge(proxy_url)
        if challenge is None or not _same_host(challenge.params.get("realm", ""), proxy_url):
            return creds.authorization()
        key = (proxy_url, creds.username, repository)
        now = self.clock()
        with self._lock:
            cached = self._tokens.get(key)
        if cached and now < cached[1] + (cached[2] - cached[1]) / 2:
            return f"Bearer {cached[0]}"
        params = {"scope": f"repository:{repository}:pull"}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        realm = challenge.params["realm"]
        resp = self.http.get(realm, params=params, headers={"Authorization": creds.authorization()}, timeout=TIMEOUT_S)
        if resp.status_code != 200:
            raise PermissionError(f"token realm {realm} refused the route's proxy credentials ({resp.status_code})")
        token = parse_token_response(resp.content, realm)
        with self._lock:
            self._tokens[key] = (token.value, now, now + token.expires_in)
        return f"Bearer {token.value}"

    def _challenge(self, proxy_url: str) -> Challenge | None:
        with self._lock:
            if proxy_url in self._challenges:
                return self._challenges[proxy_url]
        resp = self.http.get(f"{proxy_url}/v2/", timeout=TIMEOUT_S)
        challenge = find_challenge(resp.headers.get("WWW-Authenticate"), "bearer") if resp.status_code == 401 else None
        with self._lock:
            self._challenges[proxy_url] = challenge
        return challenge


def _same_host(realm: str, proxy_url: str) -> bool:
    r, p = urlsplit(realm), urlsplit(proxy_url)
    return bool(r.hostname) and r.hostname == p.hostname and (p.scheme != "https" or r.scheme == "https")
