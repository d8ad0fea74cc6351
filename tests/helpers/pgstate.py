"""A PostgreSQL state schema of its own for one test, dropped afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from alert_service.state.postgres import PgTarget
from tests.helpers.services import need_postgresql, unique_name

__all__ = ["drop_schema", "pg_target"]


def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it (no error when it is absent)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        conn.execute(drop.format(sql.Identifier(schema)))


@pytest.fixture
def pg_target() -> Iterator[PgTarget]:
    """A :class:`PgTarget` on the test server in a new schema (skips without a
    server, fails under ``CI=true``: :func:`need_postgresql`)."""
    dsn = need_postgresql()
    target = PgTarget(dsn, unique_name("tc"))
    yield target
    drop_schema(dsn, target.schema)
