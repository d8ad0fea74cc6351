"""``kill -9`` of ``run`` while aggregation windows fill: no crossing lost, none twice.

Three processes of a result log each cross a port-scan threshold, the lines arriving
in chunks; after each chunk the service is killed with SIGKILL at an arbitrary
instant (while reading, committing or delivering) and started again. In the end the
outbox holds exactly one alert per process, each counted from the same window, and
the receiver saw exactly those three alert ids (a send whose success was not yet
recorded is repeated with the same ``webhook-id``, which receivers drop).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.alert_service.aggregate.aggregate_support import line, scan_rule
from tests.helpers.osqueryd import ROOT
from tests.helpers.procs import wait_for
from tests.helpers.receiver import webhook_receiver

THRESHOLD = 40
PIDS = (5001, 5002, 5003)


def _service(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.DEVNULL,
    )


def _caught_up(db: Path, log: Path) -> bool:
    if not db.exists():
        return False
    conn = sqlite3.connect(db, timeout=30)
    try:
        row = conn.execute("SELECT offset FROM checkpoints").fetchone()
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
    except sqlite3.OperationalError:
        return False  # not created yet
    finally:
        conn.close()
    return row is not None and row[0] == log.stat().st_size and pending[0] == 0


def test_kill_9_neither_loses_nor_repeats_a_crossing(tmp_path: Path) -> None:
    rnd = random.Random(15)
    log = tmp_path / "results.log"
    log.touch()
    db = tmp_path / "state" / "state.sqlite3"
    # 3 pids, 45 ports each, interleaved; every pid crosses at its 40th distinct port
    lines = [
        line(1000 + i, pid=pid, remote_port=1 + i, local_port=20000 + i)
        for i in range(45)
        for pid in PIDS
    ]
    with webhook_receiver() as receiver:
        config = tmp_path / "alerts.yaml"
        rule = scan_rule(threshold=THRESHOLD, window_secs=600)
        doc = {
            "state_dir": str(tmp_path / "state"),
            "sources": [{"path": str(log), "start_at": "beginning", "poll_interval_secs": 0.05}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": receiver.url}],
            "rules": [rule],
        }
        config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        kills = 0
        for start in range(0, len(lines), 9):
            with log.open("a", encoding="utf-8") as f:
                f.writelines(x + "\n" for x in lines[start : start + 9])
            service = _service(config)
            time.sleep(rnd.uniform(0.3, 1.5))  # an arbitrary instant, not an assertion
            service.send_signal(signal.SIGKILL)
            service.wait(timeout=10)
            kills += 1
        service = _service(config)
        try:
            wait_for(lambda: _caught_up(db, log), timeout_secs=60)
        finally:
            service.terminate()
            service.wait(timeout=15)

    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT alert_id, state, payload FROM outbox").fetchall()
    conn.close()
    payloads = [json.loads(p) for _, _, p in rows]
    assert sorted(p["aggregate"]["group"]["pid"] for p in payloads) == list(PIDS)
    assert {p["aggregate"]["count"] for p in payloads} == {THRESHOLD}
    assert {p["aggregate"]["first_time"] for p in payloads} == {1000}
    assert {state for _, state, _ in rows} == {"sent"}
    ids = {r.headers.get("webhook-id") for r in receiver.requests}
    assert ids == {alert_id for alert_id, _, _ in rows}
    assert kills == 15
