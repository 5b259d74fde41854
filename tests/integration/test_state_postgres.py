"""The StateStore contract (tests/unit/test_state_store.py) against the devstack's PostgreSQL.

Each test gets its own freshly created schema (selected through the connection's search_path), dropped
afterwards, so runs never see each other's rows. Needs the devstack's PostgreSQL (`make up`); the URL comes
from LAYERFILL_DEVSTACK_POSTGRES_URL, else the devstack's default port (it does not start the stack).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from layerfill.devstack.context import Ports
from layerfill.state import StateStore, parse_url
from layerfill.state.models import Base
from tests.unit.test_state_store import IMG, REG, REPO, StateStoreContract, layer

pytestmark = pytest.mark.integration


def _base_url() -> sa.URL:
    default = f"postgresql+psycopg://postgres@127.0.0.1:{Ports().postgres}/layerfill"
    return parse_url(os.environ.get("LAYERFILL_DEVSTACK_POSTGRES_URL", default))


def _admin() -> psycopg.Connection:
    url = _base_url()
    try:
        return psycopg.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {url.render_as_string(hide_password=True)} is not reachable ({exc}); `make up`")


@pytest.fixture
def pg_schema() -> Iterator[str]:
    name = f"lf_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with _admin() as conn:
            conn.execute(f'DROP SCHEMA "{name}" CASCADE')


class TestPostgresStateStore(StateStoreContract):
    @pytest.fixture
    def state_url(self, pg_schema: str) -> str:
        url = _base_url().update_query_dict({"options": f"-csearch_path={pg_schema}"})
        return url.render_as_string(hide_password=False)

    def test_tables_live_in_the_test_schema(self, store: StateStore, pg_schema: str) -> None:
        with _admin() as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
            ).fetchall()
        # Every table the models declare, created by the migrations in the schema the URL selects.
        assert {r[0] for r in rows} == {*Base.metadata.tables, "alembic_version"}
        assert {"images", "blobs", "scans", "referrer_checks", "blob_leases"} <= {r[0] for r in rows}

    def test_timestamps_are_timestamptz(self, store: StateStore, pg_schema: str) -> None:
        store.mark_complete(REG, REPO, IMG, total_bytes=100, fetched_bytes=100, blobs=[layer(1)])
        with _admin() as conn:
            types = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = %s AND table_name = 'images'",
                    (pg_schema,),
                ).fetchall()
            )
        assert types["completed_at"] == "timestamp with time zone"
        assert types["total_bytes"] == "bigint"
