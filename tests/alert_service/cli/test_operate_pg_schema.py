"""Operator commands never create or upgrade the PostgreSQL state schema.

A mistyped ``state.schema`` must not look like an empty, healthy state (all-zero
counts, exit 0) and must not leave a stray schema behind that no instance reads; a
schema of an older version must not be upgraded under the older instances still
running on it. Real PostgreSQL on 127.0.0.1, one ``pgops_*`` schema per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from alert_service.config import load_config
from alert_service.console.app import ConsoleApp, Request
from alert_service.state.db import open_state
from alert_service.state.postgres import PG_SCHEMA_VERSION, PgTarget
from tests.helpers.alert_ops import cli, write_config
from tests.helpers.pgstate import drop_schema
from tests.helpers.services import need_postgresql, unique_name

PASSWORD = "pgops-not-shown-4711"
"""A password in the DSN (the server trusts every local user, so it is never checked);
no message may show it."""

READS = (
    ("status",),
    ("outbox", "list"),
    ("outbox", "show", "1"),
    ("silence", "list"),
    ("cluster-status",),
)
WRITES = (
    ("silence", "add", "--for", "1h", "--rule", "r", "--comment", "window"),
    ("silence", "expire", "1"),
    ("outbox", "retry", "--dead"),
    ("outbox", "purge", "--sent-before", "1h"),
)


@pytest.fixture
def target() -> Iterator[PgTarget]:
    """A schema name no one has created yet (dropped afterwards in case it was)."""
    dsn = f"{need_postgresql()} password={PASSWORD}"
    found = PgTarget(dsn, unique_name("pgops"))
    yield found
    drop_schema(dsn, found.schema)


def _config(tmp: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TC_STATE_DSN", target.dsn)
    state = (
        f"state:\n  backend: postgresql\n  dsn: {{env: TC_STATE_DSN}}\n  schema: {target.schema}\n"
    )
    return write_config(tmp, "http://127.0.0.1:9/hook", extra=state)


def _schema_exists(target: PgTarget) -> bool:
    with psycopg.connect(target.dsn) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (target.schema,)
        ).fetchone()
    return row is not None


def _tables(target: PgTarget) -> set[str]:
    with psycopg.connect(target.dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (target.schema,)
        ).fetchall()
    return {r[0] for r in rows}


def _stored_version(target: PgTarget) -> str:
    with psycopg.connect(target.dsn) as conn:
        query = sql.SQL("SELECT value FROM {}.meta WHERE key = 'schema_version'")
        row = conn.execute(query.format(sql.Identifier(target.schema))).fetchone()
    assert row is not None
    return str(row[0])


def _set_version(target: PgTarget, version: int) -> None:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        query = sql.SQL("UPDATE {}.meta SET value = %s WHERE key = 'schema_version'")
        conn.execute(query.format(sql.Identifier(target.schema)), (str(version),))


@pytest.mark.parametrize("args", READS + WRITES, ids=" ".join)
def test_a_missing_schema_is_exit_1_naming_it_and_nothing_is_created(
    args: tuple[str, ...], tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, target, monkeypatch)
    done = cli(*args, "--config", str(config))
    assert done.returncode == 1, done.stdout
    assert f"schema {target.schema} does not exist" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not _schema_exists(target)


def test_a_schema_without_the_tables_is_exit_1_and_stays_empty(
    tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema)))
    config = _config(tmp_path, target, monkeypatch)
    for args in READS + WRITES:
        done = cli(*args, "--config", str(config))
        assert done.returncode == 1, (args, done.stdout)
        assert f"schema {target.schema} has no table" in done.stderr, args
        assert "outbox" in done.stderr
        assert PASSWORD not in done.stderr
    assert _tables(target) == set()


def test_the_console_does_not_create_a_missing_schema(
    tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ConsoleApp(load_config(_config(tmp_path, target, monkeypatch)))
    for page in ("/console/", "/console/alerts", "/console/dead", "/console/silences"):
        response = app.handle(Request("GET", page, "", {}, b""))
        assert response.status == 503, page
        assert f"schema {target.schema} does not exist" in response.body.decode()
    assert not _schema_exists(target)


def test_an_older_schema_is_read_and_written_without_upgrading_it(
    tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Instances of the previous version still run on this schema: it keeps its
    # version (and lacks what this version adds) until this version's run starts.
    open_state(target).close()
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE {}.rate_buckets").format(sql.Identifier(target.schema)))
    _set_version(target, 1)
    config = _config(tmp_path, target, monkeypatch)
    for args in (*READS, WRITES[0]):
        done = cli(*args, "--config", str(config))
        assert done.returncode == (1 if args[:2] == ("outbox", "show") else 0), done.stderr
        if args != ("cluster-status",):  # one JSON document, no notes
            assert f"schema {target.schema} is version 1" in done.stderr, args
            assert "not upgraded" in done.stderr
    status = cli("status", "--config", str(config))
    assert "silences in force:\n  #1 " in status.stdout
    assert _stored_version(target) == "1"
    assert "rate_buckets" not in _tables(target)


def test_a_newer_schema_is_refused(
    tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_state(target).close()
    _set_version(target, PG_SCHEMA_VERSION + 1)
    config = _config(tmp_path, target, monkeypatch)
    for args in (READS[0], WRITES[0]):
        done = cli(*args, "--config", str(config))
        assert done.returncode == 1
        assert f"version {PG_SCHEMA_VERSION + 1}" in done.stderr
    assert _stored_version(target) == str(PG_SCHEMA_VERSION + 1)


def test_an_existing_current_schema_works(
    tmp_path: Path, target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_state(target).close()
    config = _config(tmp_path, target, monkeypatch)
    for args in (*READS, *WRITES):
        done = cli(*args, "--config", str(config))
        expected = 1 if args[:2] == ("outbox", "show") else 0  # no row 1 (silence 1 exists)
        assert done.returncode == expected, (args, done.stderr)
        assert "not upgraded" not in done.stderr
