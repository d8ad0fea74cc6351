"""The state contract, on both backends: SQLite (a file) and PostgreSQL (a schema).

Every test runs once per backend through the same :func:`open_state` seam; the
PostgreSQL runs use the real server on 127.0.0.1, each in its own schema, dropped
afterwards. The last tests are PostgreSQL's own: claims shared by workers of
several instances.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alerts_support import serve_endpoint
from deliver_support import make_alert
from psycopg import sql

from alert_service.config import build_config
from alert_service.deliver import build_delivery_service
from alert_service.errors import ConfigError
from alert_service.pipeline import Pipeline
from alert_service.source import FileIdentity, Position
from alert_service.state.checkpoints import (
    SqliteCheckpoints,
    load_checkpoint,
    save_checkpoint,
)
from alert_service.state.db import StateConnection, StateTarget, open_state
from alert_service.state.outbox import (
    due_rows,
    enqueue_alerts,
    mark_retry,
    mark_sent,
    purge,
    queue_depths,
    release_claims,
    transaction,
)
from alert_service.state.postgres import PgStateError, PgTarget
from alert_service.stats import Stats
from tests.helpers.services import need_postgresql, unique_name

NOW = 1_756_796_709.0


@pytest.fixture
def pg_target() -> Iterator[PgTarget]:
    dsn = need_postgresql()
    target = PgTarget(dsn, unique_name("tc"))
    yield target
    with psycopg.connect(dsn, autocommit=True) as conn:
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        conn.execute(drop.format(sql.Identifier(target.schema)))


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> StateTarget:
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite3")
    return request.getfixturevalue("pg_target")  # type: ignore[no-any-return]


@pytest.fixture
def conn(target: StateTarget) -> Iterator[StateConnection]:
    c = open_state(target)
    yield c
    c.close()


def test_outbox_rows_are_inserted_once_and_move_through_their_states(
    conn: StateConnection,
) -> None:
    alerts = [make_alert(host=f"h{i}") for i in range(3)]
    with transaction(conn):
        assert enqueue_alerts(conn, alerts, NOW) == 3
    with transaction(conn):
        assert enqueue_alerts(conn, alerts, NOW + 1) == 0  # the same alerts again
    rows = due_rows(conn, "hook", NOW, 10)
    assert [r.alert_id for r in rows] == [a.id for a in alerts]
    assert queue_depths(conn)["hook"].pending == 3
    mark_sent(conn, rows[:1], NOW, {"k": NOW + 100})
    mark_sent(conn, rows[1:2], NOW, {"k": NOW + 50})  # a silence never shrinks
    mark_retry(conn, rows[2:], NOW + 30, "HTTP 500")
    assert due_rows(conn, "hook", NOW + 10, 10) == []
    again = due_rows(conn, "hook", NOW + 30, 10)
    assert [(r.alert_id, r.attempts) for r in again] == [(alerts[2].id, 1)]
    until = conn.execute("SELECT until FROM silences WHERE key = 'k'").fetchone()[0]
    assert until == NOW + 100
    assert purge(conn, NOW + 200, 60) == (2, 1)


def test_checkpoints_round_trip_with_unsigned_64_bit_identities(conn: StateConnection) -> None:
    position = Position("/var/log/a.log", FileIdentity(2**64 - 1, 2**63), 4096, b"\x00" * 32, 32)
    with transaction(conn):
        save_checkpoint(conn, "/var/log/a.log", position, NOW)
    stored = load_checkpoint(conn, "/var/log/a.log")
    assert stored is not None and stored.position == position
    stream = Position("osquery.part.3.*", FileIdentity(0, 0), 9, b"2026-01-01T00:00:00Z", 20)
    with transaction(conn):
        save_checkpoint(conn, "nats:RESULTS/alerts-3", stream, NOW)
    store = SqliteCheckpoints(conn, 60)
    assert store.expire([], NOW + 30) == []
    assert store.expire([], NOW + 61) == ["/var/log/a.log"]
    assert load_checkpoint(conn, "/var/log/a.log") is None
    # an idle partition keeps its place in the stream
    stored = load_checkpoint(conn, "nats:RESULTS/alerts-3")
    assert stored is not None and stored.position == stream


def test_a_failed_transaction_leaves_nothing_behind(conn: StateConnection) -> None:
    with pytest.raises(sqlite3.Error), transaction(conn):
        enqueue_alerts(conn, [make_alert()], NOW)
        conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert due_rows(conn, "hook", NOW, 10) == []
    assert not conn.in_transaction


def line(host: str, remote: str, counter: int, unix_time: int, action: str = "added") -> str:
    return json.dumps(
        {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": host,
            "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
            "unixTime": unix_time,
            "epoch": 0,
            "counter": counter,
            "numerics": False,
            "columns": {"remote_address": remote, "remote_port": "443", "pid": "1"},
            "action": action,
        }
    )


def test_pipeline_baseline_and_checkpoint_on_each_backend(
    tmp_path: Path, target: StateTarget
) -> None:
    """A counter-0 re-log of a known row alerts nothing; a new row alerts once."""
    log = tmp_path / "results.log"
    log.write_text(
        line("h1", "198.51.100.7", 3, 100) + "\n"  # alert
        + line("h1", "198.51.100.7", 0, 200) + "\n"  # re-log of a known row: none
        + line("h1", "198.51.100.8", 0, 200) + "\n"  # new in the re-log: alert
    )
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "sources": [{"path": str(log), "start_at": "beginning"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [
            {
                "name": "ioc",
                "notify": ["hook"],
                "remote_address": {"include": ["198.51.100.0/24"]},
            }
        ],
    }
    config = build_config(doc, "test.yaml", environ={})
    conn = open_state(target)
    stats = Stats()
    pipeline = Pipeline(config, stats=stats, state=conn)
    try:
        pipeline.poll_once()
    finally:
        pipeline.close()
    remotes = sorted(
        r.payload.split('"remote_address":"')[1][:12] for r in due_rows(conn, "hook", 2e9, 10)
    )
    assert remotes == ["198.51.100.7", "198.51.100.8"]
    assert stats.baseline_rows_known == 1
    stored = load_checkpoint(conn, str(log))
    assert stored is not None and stored.position.offset == log.stat().st_size
    conn.close()


# -- PostgreSQL: several instances share the outbox ---------------------------------


def test_workers_of_two_instances_claim_disjoint_rows(pg_target: PgTarget) -> None:
    a, b = open_state(pg_target), open_state(pg_target)
    try:
        with transaction(a):
            enqueue_alerts(a, [make_alert(host=f"h{i}") for i in range(10)], NOW)
        first = due_rows(a, "hook", NOW, 6)
        second = due_rows(b, "hook", NOW, 6)
        assert len(first) == 6 and len(second) == 4
        assert not {r.rowid for r in first} & {r.rowid for r in second}
        assert due_rows(a, "hook", NOW, 6) == []  # everything is claimed
        release_claims(a, first[3:])  # not attempted: given back at once
        assert sorted(r.rowid for r in due_rows(b, "hook", NOW, 10)) == sorted(
            r.rowid for r in first[3:]
        )
        # a claim of a worker that died expires
        assert len(due_rows(b, "hook", NOW + 301, 10)) == 10
    finally:
        a.close()
        b.close()


def test_two_delivery_services_send_each_row_once(pg_target: PgTarget) -> None:
    with serve_endpoint() as endpoint:
        doc: dict[str, Any] = {
            "sources": [{"path": "/nonexistent.log"}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": endpoint.url}],
            "rules": [{"name": "r", "notify": ["hook"], "remote_port": [4444]}],
            "delivery": {"poll_interval_secs": 0.05},
        }
        config = build_config(doc, "test.yaml", environ={})
        conn = open_state(pg_target)
        alerts = [make_alert(host=f"h{i}", rule="r") for i in range(60)]
        with transaction(conn):
            enqueue_alerts(conn, alerts, NOW)
        services = [build_delivery_service(config, pg_target) for _ in range(2)]
        for service in services:
            service.start()
        try:
            assert endpoint.wait_for(60, timeout_secs=60, accepted=True) == 60
        finally:
            for service in services:
                service.stop()
        conn.close()
    ids = endpoint.webhook_ids()
    assert len(ids) == 60 and set(ids.values()) == {1}


def test_an_unreachable_server_is_a_state_error(tmp_path: Path) -> None:
    target = PgTarget("host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2")
    with pytest.raises(sqlite3.Error) as err:
        open_state(target)
    assert isinstance(err.value, PgStateError)
    assert "port=1" not in repr(target)


def test_state_section_is_checked(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "sources": [{"path": "/x.log"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"name": "r", "notify": ["hook"], "remote_port": [1]}],
    }
    with pytest.raises(ConfigError) as err:
        build_config({**base, "state": {"backend": "postgresql"}}, "t.yaml", environ={})
    assert "$.state: backend postgresql needs dsn" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config(
            {**base, "state": {"backend": "postgresql", "dsn": {"env": "PG"}}},
            "t.yaml",
            environ={},
        )
    assert "$.state.dsn: environment variable PG is not set" in str(err.value)
    config = build_config(
        {**base, "state": {"backend": "postgresql", "dsn": {"env": "PG"}, "schema": "tc1"}},
        "t.yaml",
        environ={"PG": "host=db dbname=alerts"},
    )
    assert config.state.target("/unused") == PgTarget("host=db dbname=alerts", "tc1")
    assert "host=db" not in config.state.describe("/unused")
    assert build_config(base, "t.yaml", environ={}).state.target("/d") == "/d/state.sqlite3"



def test_instances_starting_together_create_the_schema_once(pg_target: PgTarget) -> None:
    """CREATE SCHEMA IF NOT EXISTS alone fails for the second of two concurrent
    instances (a unique violation); the schema lock makes them take turns."""
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            open_state(pg_target).close()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
