"""Aggregation windows on the PostgreSQL state: kept across a restart and a kill -9.

The same contract as the SQLite tests of ``tests/alert_service/aggregate``: the
windows are written in the batch's transaction, so a crossing counts the lines of
the committed batches once and is queued once, whichever process reads on.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from alert_service.pipeline import Pipeline
from alert_service.state.db import StateConnection, open_state
from alert_service.state.postgres import PgTarget
from tests.alert_service.aggregate.aggregate_support import config, line, scan_rule
from tests.helpers.osqueryd import ROOT
from tests.helpers.pgstate import pg_target
from tests.helpers.procs import wait_for
from tests.helpers.receiver import webhook_receiver

__all__ = ["pg_target"]  # the fixture, used by name


def write(log: Path, lines: list[str]) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write("".join(item + "\n" for item in lines))


def outbox(conn: StateConnection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT payload FROM outbox ORDER BY rowid").fetchall()
    return [json.loads(payload) for (payload,) in rows]


def test_windows_survive_a_restart_and_count_once(tmp_path: Path, pg_target: PgTarget) -> None:
    log = tmp_path / "results.log"
    cfg = config(tmp_path, scan_rule(threshold=4, window_secs=100), log=log)
    write(log, [line(1, remote_port=1, local_port=1), line(2, remote_port=2, local_port=2)])
    conn = open_state(pg_target)
    first = Pipeline(cfg, state=conn)
    first.poll_once()
    first.close()
    conn.close()

    write(log, [line(3, remote_port=3, local_port=3), line(4, remote_port=4, local_port=4)])
    conn = open_state(pg_target)
    assert outbox(conn) == []
    second = Pipeline(cfg, state=conn)
    assert second.aggregates.group_count("port-scan") == 1
    second.poll_once()
    write(log, [line(5, remote_port=5, local_port=5)])
    second.poll_once()
    second.close()
    queued = outbox(conn)
    conn.close()
    assert [(q["aggregate"]["count"], q["aggregate"]["first_time"]) for q in queued] == [(4, 1)]
    assert second.stats.aggregate_alerts == 1


def test_a_version_1_schema_with_an_sqlite_shaped_window_table_is_upgraded(
    tmp_path: Path, pg_target: PgTarget
) -> None:
    """Version 1 let state/windows.py create ``aggregate_windows`` without a rowid
    (and with a 4-byte ``REAL`` time): reading it back failed on every start."""
    conn = open_state(pg_target)
    conn.execute("DROP TABLE aggregate_windows")
    conn.execute(
        "CREATE TABLE aggregate_windows (rule TEXT NOT NULL, group_key TEXT NOT NULL,"
        " state TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (rule, group_key))"
    )
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    log = tmp_path / "results.log"
    cfg = config(tmp_path, scan_rule(threshold=2, window_secs=100), log=log)
    write(log, [line(1, remote_port=1, local_port=1)])
    conn = open_state(pg_target)
    pipeline = Pipeline(cfg, state=conn)
    pipeline.poll_once()
    pipeline.close()
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        "2",
    )
    # The batch went to a change row (folded into aggregate_windows later): both
    # tables keep 8-byte seconds, not a 4-byte float's.
    stamp = conn.execute("SELECT updated_at FROM aggregate_window_changes").fetchone()[0]
    assert abs(stamp - time.time()) < 3600
    types = conn.execute(
        "SELECT table_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND column_name = 'updated_at'"
        " AND table_name LIKE 'aggregate_window%' ORDER BY table_name"
    ).fetchall()
    conn.close()
    assert types == [
        ("aggregate_window_changes", "double precision"),
        ("aggregate_windows", "double precision"),
    ]


def _caught_up(dsn: str, schema: str, log: Path) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        try:
            row = conn.execute('SELECT "offset" FROM checkpoints').fetchone()
            pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
        except psycopg.errors.UndefinedTable:
            return False
    return (
        row is not None
        and pending is not None
        and row[0] == log.stat().st_size
        and (pending[0] == 0)
    )


def test_kill_9_neither_loses_nor_repeats_a_crossing(tmp_path: Path, pg_target: PgTarget) -> None:
    """``run`` on the PostgreSQL state killed with SIGKILL after each chunk of lines."""
    threshold, pids = 40, (5001, 5002, 5003)
    rnd = random.Random(14)
    log = tmp_path / "results.log"
    log.touch()
    lines = [
        line(1000 + i, pid=pid, remote_port=1 + i, local_port=20000 + i)
        for i in range(45)
        for pid in pids
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT), TC_STATE_DSN=pg_target.dsn)
    with webhook_receiver() as receiver:
        cfg = tmp_path / "alerts.yaml"
        doc = {
            "state_dir": str(tmp_path / "state"),
            "state": {
                "backend": "postgresql",
                "dsn": {"env": "TC_STATE_DSN"},
                "schema": pg_target.schema,
                # a killed instance's claims on outbox rows end after this (default 300)
                "claim_secs": 2,
            },
            "sources": [{"path": str(log), "start_at": "beginning", "poll_interval_secs": 0.05}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": receiver.url}],
            "rules": [scan_rule(threshold=threshold, window_secs=600)],
        }
        cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
        command = [sys.executable, "-m", "alert_service", "run", "--config", str(cfg)]
        kills = 0
        for start in range(0, len(lines), 15):
            write(log, lines[start : start + 15])
            service = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
            time.sleep(rnd.uniform(0.5, 2.0))  # an arbitrary instant, not an assertion
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=10)
            kills += 1
        service = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: _caught_up(pg_target.dsn, pg_target.schema, log), timeout_secs=90)
        finally:
            service.terminate()
            service.wait(timeout=15)

    conn = open_state(pg_target)
    rows = conn.execute("SELECT alert_id, state, payload FROM outbox").fetchall()
    conn.close()
    payloads = [json.loads(p) for _, _, p in rows]
    assert sorted(p["aggregate"]["group"]["pid"] for p in payloads) == list(pids)
    assert {p["aggregate"]["count"] for p in payloads} == {threshold}
    assert {p["aggregate"]["first_time"] for p in payloads} == {1000}
    assert {state for _, state, _ in rows} == {"sent"}
    ids = {r.headers.get("webhook-id") for r in receiver.requests}
    assert ids == {alert_id for alert_id, _, _ in rows}
    assert kills == 9
