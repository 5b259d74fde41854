"""The devstack's env file pins the state DB to the devstack's PostgreSQL: `layerfill status` answers the same
from any directory (it used to read a SQLite file in the current one), and processes that start together on a
fresh PostgreSQL database migrate it one after the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from layerfill.state import StateStore, parse_url
from layerfill.state.migrate import current_revision, head_revision
from tests.support.stack import DevStack

pytestmark = pytest.mark.integration


def _env_file(devstack: DevStack) -> dict[str, str]:
    lines = devstack.ctx.paths.env_file.read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln and not ln.startswith("#"))


def _status(devstack: DevStack, cwd: Path, repository: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAYERFILL_STATE__")}
    env["LAYERFILL_ENV_FILE"] = str(devstack.ctx.paths.env_file)
    res = subprocess.run([sys.executable, "-m", "layerfill.cli.main", "status", "--json", "--repository", repository],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_env_file_names_the_devstack_postgres(devstack: DevStack) -> None:
    env = _env_file(devstack)
    assert env["LAYERFILL_STATE__DATABASE_URL"] == devstack.stack.postgres.url("layerfill")
    assert parse_url(env["LAYERFILL_STATE__DATABASE_URL"]).get_backend_name() == "postgresql"


def test_status_answers_the_same_from_any_directory(devstack: DevStack, tmp_path: Path) -> None:
    url = _env_file(devstack)["LAYERFILL_STATE__DATABASE_URL"]
    repo = f"t{uuid.uuid4().hex[:10]}/app"
    digest = "sha256:" + uuid.uuid4().hex * 2
    with StateStore(url) as store:  # what a fetcher on this devstack would have recorded
        store.mark_complete("127.0.0.1:1", repo, digest, total_bytes=10, fetched_bytes=10, blobs=[])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        first, second = _status(devstack, tmp_path / "a", repo), _status(devstack, tmp_path / "b", repo)
    finally:
        with StateStore(url) as store:  # the devstack's own state DB: leave nothing behind
            store.forget_image("127.0.0.1:1", repo, digest)
    assert first["state_db"] == second["state_db"]
    assert first["state_db"].startswith("postgresql+psycopg://postgres@")
    assert [i["digest"] for i in first["images"]] == [i["digest"] for i in second["images"]] == [digest]
    assert not list(tmp_path.rglob("*.db")), "a SQLite state file appeared in the current directory"


def test_processes_starting_together_migrate_one_after_the_other(devstack: DevStack) -> None:
    base = parse_url(devstack.stack.postgres.url("layerfill"))
    schema = f"lf_mig_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(host=base.host, port=base.port, user=base.username, dbname=base.database, autocommit=True)
    admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        code = "import sys; from layerfill.state.migrate import upgrade; upgrade(sys.argv[1])"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]  # fmt: skip
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
        assert current_revision(url) == head_revision()
        engine = sa.create_engine(parse_url(url))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        engine.dispose()
    finally:
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.close()
