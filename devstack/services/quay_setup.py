"""One-off Quay set-up through its API, idempotent: the first superuser (`/api/v1/user/initialize`, which also
returns an OAuth token), the proxy-cache organization for the devstack upstream, and the robot account layerfill
pulls with (a member of the organization through a team: pull-through needs organization membership)."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from ..context import StackContext
from .base import ServiceError

TEAM = "layerfill"


class QuaySetup:
    def __init__(self, ctx: StackContext, url: str) -> None:
        self.ctx = ctx
        self.url = url
        self.file: Path = ctx.paths.data / "quay" / "setup.json"

    def _call(self, method: str, path: str, token: str, expect: tuple[int, ...], **kw) -> requests.Response:
        resp = requests.request(
            method, f"{self.url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kw
        )
        if resp.status_code not in expect:
            raise ServiceError(f"Quay {method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp

    def _admin_token(self) -> str:
        if self.file.exists():
            return json.loads(self.file.read_text())["api_token"]
        s = self.ctx.secrets
        body = {
            "username": s.quay_admin,
            "password": s.quay_admin_password,
            "email": f"{s.quay_admin}@devstack.invalid",
            "access_token": True,
        }
        resp = requests.post(f"{self.url}/api/v1/user/initialize", json=body, timeout=60)
        if resp.status_code != 200 or "access_token" not in resp.json():
            raise ServiceError(
                f"Quay user initialize: {resp.status_code} {resp.text[:500]} (a Quay database from an earlier stack "
                f"without {self.file}? `layerfill devstack down` and remove .devstack/data to start afresh)"
            )
        token = resp.json()["access_token"]
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.write_text(json.dumps({"api_token": token}))
        return token

    def run(self) -> dict[str, str]:
        c = self.ctx
        token = self._admin_token()
        org = c.quay_org
        if self._call("GET", f"/organization/{org}", token, (200, 404)).status_code == 404:
            self._call(
                "POST", "/organization/", token, (200, 201), json={"name": org, "email": f"{org}@devstack.invalid"}
            )
        upstream = f"{c.host}:{c.ports.upstream}"
        current = self._call("GET", f"/organization/{org}/proxycache", token, (200,)).json()
        if current.get("upstream_registry") != upstream:
            if current.get("upstream_registry"):
                self._call("DELETE", f"/organization/{org}/proxycache", token, (200, 201, 204))
            body = {"org_name": org, "upstream_registry": upstream, "insecure": True}
            self._call("POST", f"/organization/{org}/proxycache", token, (200, 201), json=body)
        robot_path = f"/organization/{org}/robots/{c.quay_robot}"
        resp = self._call("GET", robot_path, token, (200, 400, 404))
        if resp.status_code != 200:
            resp = self._call("PUT", robot_path, token, (200, 201), json={"description": "layerfill (read only)"})
        robot = resp.json()
        self._call("PUT", f"/organization/{org}/team/{TEAM}", token, (200, 201), json={"role": "member"})
        # Quay answers a second PUT of a member with 400 "already a member": look before adding, so `up` reruns.
        members = self._call("GET", f"/organization/{org}/team/{TEAM}/members", token, (200,)).json()["members"]
        if robot["name"] not in {m.get("name") for m in members}:
            self._call("PUT", f"/organization/{org}/team/{TEAM}/members/{robot['name']}", token, (200, 201), json={})
        return {"robot": robot["name"], "robot_token": robot["token"], "api_token": token}
