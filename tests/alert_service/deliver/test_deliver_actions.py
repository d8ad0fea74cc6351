"""Response actions go through the durable outbox like any notifier.

A ``command`` action and a ``fleet_script`` action are configured as notifiers, alerts
are queued in a real state database, and the delivery service's workers run them:
the type's conservative default rate limit paces them, the dedup window keeps one
action per connection, and a Fleet 503 is retried until Fleet accepts. Time is
compressed with the delivery service's ``ScaledClock``.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alerts_support import Answer, Request, serve_endpoint
from deliver_support import make_alert as shared_alert

from alert_service.config import build_config
from alert_service.deliver.clock import ScaledClock
from alert_service.deliver.service import build_delivery_service
from alert_service.match import Alert
from alert_service.notify import CommandNotifier, FleetScriptNotifier
from alert_service.state.db import open_state
from alert_service.state.outbox import enqueue_alerts, transaction

# Clock seconds per real second. The recorder stamps its own start, so each gap carries a
# Python start-up's jitter (tens of ms on a busy host); 5x keeps that small beside 0.4 s.
FACTOR = 5.0
RECORDER = """\
import json, os, sys, time
with open(os.environ["RECORD"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({"argv": sys.argv[1:], "t": time.time()}) + "\\n")
"""


def make_alert(pid: int, counter: int, notify: tuple[str, ...]) -> Alert:
    row: dict[str, str | int | None] = {
        "pid": pid,
        "protocol": 6,
        "local_address": "10.0.0.5",
        "local_port": 40000 + counter,
        "remote_address": "198.51.100.7",
        "remote_port": 4444,
        "name": "nc",
    }
    return shared_alert(
        notify=notify,
        counter=counter,
        columns=row,
        calendar_time="",
        unix_time=1756796709 + counter,
        decorations={"host_uuid": "uuid-web-01"},
    )


@pytest.fixture
def fleet() -> Iterator[dict[str, Any]]:
    """A minimal Fleet: host lookup, the host's answer that pid 200 is nc, and script runs
    answered 503 once, then 202."""
    state: dict[str, Any] = {"runs": [], "answers": [503]}
    lock = threading.Lock()

    def respond(request: Request) -> Answer:
        if request.method == "GET":
            assert request.headers["Authorization"] == "Bearer tok"
            assert (
                request.path == "/api/v1/fleet/hosts/identifier/uuid-web-01?exclude_software=true"
            )
            host = {"host": {"id": 33, "uuid": "uuid-web-01", "hostname": "web-01"}}
            return Answer.json(200, host)
        body = request.json()
        if request.path == "/api/v1/fleet/hosts/33/query":
            assert body == {"query": "SELECT pid, name, path FROM processes WHERE pid = 200;"}
            rows = [{"pid": "200", "name": "nc", "path": "/usr/bin/nc"}]
            return Answer.json(200, {"host_id": 33, "rows": rows, "status": "online"})
        assert request.path == "/api/v1/fleet/scripts/run"
        with lock:
            state["runs"].append(body)
            status = state["answers"].pop(0) if state["answers"] else 202
        return Answer.json(status, {"host_id": 33, "execution_id": "e1"} if status == 202 else {})

    with serve_endpoint("", respond) as endpoint:
        state["url"] = endpoint.base_url
        yield state


def outbox_states(db: Path) -> dict[tuple[str, str], str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT alert_id, destination, state FROM outbox").fetchall()
    finally:
        conn.close()
    return {(a, d): s for a, d, s in rows}


def wait_until(predicate: Any, timeout_secs: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def test_actions_are_paced_deduplicated_and_retried_by_the_outbox(
    tmp_path: Path, fleet: dict[str, Any]
) -> None:
    recorder = tmp_path / "recorder.py"
    recorder.write_text(RECORDER, encoding="utf-8")
    record = tmp_path / "record.jsonl"
    token = tmp_path / "token"
    token.write_text("tok\n", encoding="utf-8")
    doc = {
        "sources": [{"path": str(tmp_path / "results.log")}],
        "notifiers": [
            {
                "name": "isolate",
                "type": "command",
                "command": [sys.executable, str(recorder), "--pid", "{pid}"],
                "env": {"RECORD": str(record)},
            },
            {
                "name": "fleet-kill",
                "type": "fleet_script",
                "url": fleet["url"],
                "api_token": {"file": str(token)},
                "script_id": 42,
            },
        ],
        "delivery": {"initial_backoff_secs": 1, "max_backoff_secs": 2},
        "rules": [{"name": "reverse-shell", "notify": ["isolate", "fleet-kill"]}],
    }
    config = build_config(doc, environ={})
    assert CommandNotifier.default_rate_limit_per_minute == 30.0
    assert FleetScriptNotifier.default_rate_limit_per_minute == 6.0

    db = tmp_path / "state" / "state.sqlite3"
    conn = open_state(db)
    # Three connections (pids 101-103) to the isolate action; the same connection again
    # (pid 101, a later counter) must be held back by the dedup window.
    isolate = [
        make_alert(pid, counter, ("isolate",)) for counter, pid in enumerate((101, 102, 103))
    ]
    again = make_alert(101, 9, ("isolate",))
    kill = make_alert(200, 20, ("fleet-kill",))
    with transaction(conn):
        enqueue_alerts(conn, [*isolate, kill], time.time())
    conn.close()

    clock = ScaledClock(FACTOR)
    service = build_delivery_service(config, str(db), clock=clock)
    service.start()
    try:
        assert wait_until(lambda: record.exists() and len(record.read_text().splitlines()) == 3)
        conn = open_state(db)
        with transaction(conn):
            enqueue_alerts(conn, [again], time.time())
        conn.close()
        assert wait_until(lambda: outbox_states(db).get((again.id, "isolate")) == "suppressed")
        assert wait_until(lambda: outbox_states(db).get((kill.id, "fleet-kill")) == "sent")
    finally:
        assert service.stop(10)

    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(r["argv"][1] for r in runs) == ["101", "102", "103"]
    # 30 per minute, burst 1: 2 clock seconds between runs. The times are taken by the
    # started programs, so each carries its own start-up delay (up to a tenth of a
    # second on a busy host); unpaced runs would be a few milliseconds apart.
    times = sorted(r["t"] for r in runs)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.5 * 2.0 / FACTOR for gap in gaps), gaps
    assert fleet["runs"] == [{"host_id": 33, "script_id": 42}] * 2
    states = outbox_states(db)
    assert {states[(a.id, "isolate")] for a in isolate} == {"sent"}
