"""Clair v4's HTTP API, the parts the scanner uses: submit a manifest for indexing and wait for its final index
report, read the vulnerability report, read the indexer state.

Clair v4.9 indexes synchronously: `POST /indexer/api/v1/index_report` answers when the report is final, and
closing the request cancels the indexing. So the submission waits (up to the deadline) rather than timing out
early; the report is then polled (with backoff, within the same deadline) only when the answer is not final:
a 5xx after which Clair may have stored an IndexError report, or an intermediate state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from layerfill.remote.transport.redact import scrub

from .errors import ClairRejected, ClairUnavailable
from .reports import IndexSummary, clair_error_message, summarize_index_report

INDEX_PATH = "/indexer/api/v1/index_report"
STATE_PATH = "/indexer/api/v1/index_state"
VULN_PATH = "/matcher/api/v1/vulnerability_report"
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class IndexOutcome:
    summary: IndexSummary
    report: dict[str, Any]
    indexer_state: str | None  # Clair's ETag for its scanner configuration; changes when scanners change


class ClairClient:
    def __init__(
        self,
        base_url: str,
        *,
        deadline_s: float = 600.0,
        poll_interval_s: float = 1.0,
        poll_max_interval_s: float = 10.0,
        request_timeout_s: float = 30.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.deadline_s = deadline_s
        self.poll_interval_s = poll_interval_s
        self.poll_max_interval_s = poll_max_interval_s
        self.request_timeout_s = request_timeout_s
        self.session = session or requests.Session()
        self._sleep = sleep
        self._clock = clock

    def index_report_url(self, digest: str) -> str:
        return f"{self.base_url}{INDEX_PATH}/{digest}"

    def vulnerability_report_url(self, digest: str) -> str:
        return f"{self.base_url}{VULN_PATH}/{digest}"

    # -- indexing ----------------------------------------------------------------------------------
    def index(self, manifest: dict[str, Any]) -> IndexOutcome:
        """Submit `manifest` and return its final index report (IndexFinished or IndexError).

        Raises ClairRejected when Clair refuses the manifest (4xx), ClairUnavailable when Clair cannot be
        reached or has no final report within the deadline."""
        digest = manifest["hash"]
        deadline = self._clock() + self.deadline_s
        try:
            resp = self.session.post(
                f"{self.base_url}{INDEX_PATH}",
                json=manifest,
                headers={"Accept": "application/json"},
                timeout=(CONNECT_TIMEOUT_S, self.deadline_s),
            )
        except requests.RequestException as exc:
            raise ClairUnavailable(f"index request for {digest} failed: {scrub(str(exc))}") from exc
        state = _etag(resp)
        if resp.status_code in (200, 201):
            summary = summarize_index_report(resp.json())
            if summary.final:
                return IndexOutcome(summary, resp.json(), state)
            return self._poll(digest, deadline, state)  # still in progress (e.g. another request indexes it)
        message = scrub(clair_error_message(resp.content, resp.status_code))
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            raise ClairRejected(message)
        # 5xx (or overload): when indexing itself failed, Clair stored an IndexError report that says why.
        doc = self.index_report(digest)
        if doc is not None:
            summary = summarize_index_report(doc)
            if summary.final and summary.state != "IndexFinished":
                return IndexOutcome(summary, doc, state)
        # Nothing final (a stale intermediate report is left by an interrupted run): submit again later.
        raise ClairUnavailable(f"index request for {digest} failed: {message}")

    def _poll(self, digest: str, deadline: float, state: str | None) -> IndexOutcome:
        delay = self.poll_interval_s
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ClairUnavailable(f"index report for {digest} not final within {self.deadline_s:.0f}s")
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, self.poll_max_interval_s)
            doc = self.index_report(digest)
            if doc is None:
                raise ClairUnavailable(f"Clair lost the index report for {digest} while indexing it")
            summary = summarize_index_report(doc)
            if summary.final:
                return IndexOutcome(summary, doc, state)

    def index_report(self, digest: str) -> dict[str, Any] | None:
        """The stored index report, or None when Clair has none for `digest`."""
        resp = self._get(self.index_report_url(digest), f"index report of {digest}")
        if resp.status_code == 404:
            return None
        self._expect_ok(resp, f"index report of {digest}")
        return resp.json()

    def index_state(self) -> str | None:
        resp = self._get(f"{self.base_url}{STATE_PATH}", "index state")
        self._expect_ok(resp, "index state")
        state = resp.json().get("state")
        return state if isinstance(state, str) and state else None

    # -- matching ----------------------------------------------------------------------------------
    def vulnerability_report(self, digest: str) -> dict[str, Any] | None:
        """The vulnerability report, or None while the matcher has no vulnerability data (HTTP 202)."""
        resp = self._get(self.vulnerability_report_url(digest), f"vulnerability report of {digest}")
        if resp.status_code == 202:
            return None
        if resp.status_code == 404:
            # Just indexed, yet unknown: Clair lost the report (e.g. its database was reset). Index again later.
            raise ClairUnavailable(f"Clair has no index report for {digest} to match")
        self._expect_ok(resp, f"vulnerability report of {digest}")
        return resp.json()

    # -- plumbing ----------------------------------------------------------------------------------
    def _get(self, url: str, what: str) -> requests.Response:
        try:
            return self.session.get(
                url, headers={"Accept": "application/json"}, timeout=(CONNECT_TIMEOUT_S, self.request_timeout_s)
            )
        except requests.RequestException as exc:
            raise ClairUnavailable(f"reading the {what} failed: {scrub(str(exc))}") from exc

    @staticmethod
    def _expect_ok(resp: requests.Response, what: str) -> None:
        if resp.status_code != 200:
            raise ClairUnavailable(f"reading the {what} failed: {clair_error_message(resp.content, resp.status_code)}")

    def close(self) -> None:
        self.session.close()


def _etag(resp: requests.Response) -> str | None:
    tag = resp.headers.get("etag", "").strip().strip('"')
    return tag or None
