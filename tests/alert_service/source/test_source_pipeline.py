"""Pipeline: source → parse → match wired in-process (replay, run), with counters."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alerts_support import DATA

from alert_service.config import Config, build_config
from alert_service.match import Alert
from alert_service.pipeline import Pipeline, PrintDispatcher
from alert_service.source import FileIdentity, SourceLine
from alert_service.state import open_state
from alert_service.state.record import decode_record
from alert_service.stats import Stats


def make_config(url: str = "http://127.0.0.1:9/unused", **source: Any) -> Config:
    doc = {
        "sources": [{"path": "/nonexistent/results.log", **source}],
        "notifiers": [{"name": "local", "type": "webhook", "url": url}],
        "delivery": {"max_attempts": 2, "initial_backoff_secs": 0.01, "max_backoff_secs": 0.02},
        "rules": [
            {"name": "irc", "notify": ["local"], "remote_port": ["6660-6669"]},
            {
                "name": "reverse-shell",
                "notify": ["local"],
                "remote_port": [4444],
                "actions": ["added", "removed"],
            },
            {
                "name": "unknown-process",
                "notify": ["local"],
                "process": {"name": {"exact": ["<unknown>"]}},
            },
        ],
    }
    return build_config(doc, "test.yaml", environ={})


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def dispatch(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        pass


def test_replay_of_every_fixture() -> None:
    collect = Collect()
    stats = Stats()
    config = make_config()
    # Every form of every fixture: dedup off, or the fixtures' repeats of one
    # connection would be suppressed as run would (tests/alert_service/cli/
    # test_cli_replay_matches_run.py covers that).
    config = dataclasses.replace(
        config, delivery=dataclasses.replace(config.delivery, dedup_window_secs=0)
    )
    pipeline = Pipeline(config, collect, stats)
    files = sorted(str(p) for p in DATA.glob("*.jsonl"))
    assert pipeline.replay(files) == []
    malformed = len((DATA / "malformed.jsonl").read_bytes().splitlines())
    assert stats.parse_errors == malformed
    assert stats.lines_read == sum(len(Path(f).read_bytes().splitlines()) for f in files)
    got = sorted(
        (a.rule, a.event.name, a.event.action, a.event.column("remote_port"))
        for a in collect.alerts
    )
    assert got == [
        ("irc", "pack_tracked_connections_tracked_connections", "added", 6667),  # batch
        ("irc", "pack_tracked_connections_tracked_connections", "added", 6667),  # numerics
        ("reverse-shell", "pack/Global/tracked_connections", "added", 4444),  # envelope
        ("reverse-shell", "pack/team-3/tracked_connections", "added", 4444),  # fleet
        # baseline (counter 0): a new row, so alerted (the default baseline mode)
        ("reverse-shell", "pack_tracked_connections_tracked_connections", "added", 4444),
        ("reverse-shell", "pack_tracked_connections_tracked_connections", "removed", 4444),
        ("unknown-process", "pack_tracked_connections_tracked_connections", "added", 22),
    ]
    assert stats.matches == 7
    assert stats.baseline_rows_new == 1


def test_replay_reports_unreadable_files(tmp_path: Path) -> None:
    pipeline = Pipeline(make_config(), Collect())
    assert pipeline.replay([str(tmp_path / "absent.log")]) == [str(tmp_path / "absent.log")]


def test_print_dispatcher_writes_json_lines() -> None:
    out = io.BytesIO()
    pipeline = Pipeline(make_config(), PrintDispatcher(out))
    pipeline.replay([str(DATA / "event.jsonl")])
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["rule"], d["action"], d["notify"]) for d in docs] == [
        ("reverse-shell", "removed", ["local"]),
        ("unknown-process", "added", ["local"]),
    ]
    assert docs[1]["connection"]["pid"] is None
    assert docs[1]["connection"]["remote_address"] == "::ffff:10.0.0.5"


def test_blank_lines_are_ignored() -> None:
    stats = Stats()
    pipeline = Pipeline(make_config(), Collect(), stats)
    assert pipeline.process_line(SourceLine(b"  ", FileIdentity(1, 2), 3, "x")) == 0
    assert (stats.lines_read, stats.parse_errors) == (1, 0)


def test_run_follows_a_file_and_enqueues_alerts_with_the_checkpoint(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    lines = (DATA / "event.jsonl").read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0])  # present before start: skipped with start_at end
    config = make_config(path=str(log), start_at="end", poll_interval_secs=0.02)
    stats = Stats()
    state = open_state(tmp_path / "state.sqlite3")
    pipeline = Pipeline(config, stats=stats, state=state)
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while stats.transactions == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the first commit stores where start_at put the reader
        with open(log, "ab") as fh:
            fh.write(lines[1] + b"garbage\n" + lines[2])  # one alert: unknown process
        while stats.lines_read < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    rows = state.execute("SELECT rule, destination, state, payload FROM outbox").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("unknown-process", "local", "pending")]
    stored = decode_record(rows[0][3]).alert.as_dict()
    assert stored["connection"]["remote_address"] == "::ffff:10.0.0.5"
    (offset,) = state.execute("SELECT offset FROM checkpoints").fetchone()
    assert offset == log.stat().st_size
    assert (stats.lines_read, stats.parse_errors, stats.alerts_enqueued) == (3, 1, 1)


def test_run_needs_a_state_database() -> None:
    with pytest.raises(ValueError, match="state database"):
        Pipeline(make_config()).poll_once()
