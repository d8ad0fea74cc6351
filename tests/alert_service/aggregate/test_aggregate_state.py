"""Aggregation rules in the configuration, the outbox record, the state database and replay."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from alert_service.deliver.dedup import silence_key
from alert_service.errors import ConfigError
from alert_service.match.aggregate import AggregateAlert
from alert_service.pipeline import Pipeline, PrintDispatcher
from alert_service.state.db import open_state
from alert_service.state.record import decode_record, encode_record
from tests.alert_service.aggregate.aggregate_support import config, event, line, scan_rule


def test_config_lists_every_problem_of_aggregation_rules(tmp_path: Path) -> None:
    bad_filter = scan_rule()
    bad_filter["name"] = "a"
    bad_filter["remote_address"] = {"include": ["10.0.0.1/8"]}
    no_field = scan_rule(field=None)
    no_field["name"] = "b"
    both: dict[str, Any] = scan_rule()
    both["name"] = "c"
    both["beacon"] = {"min_connections": 5}
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, bad_filter, no_field, both, {**scan_rule(threshold=0), "name": "d"})
    text = str(caught.value)
    assert "$.rules[0].remote_address.include[0]: invalid CIDR '10.0.0.1/8'" in text
    assert "$.rules[1].aggregate.field: value_count needs 'field'" in text
    assert "$.rules[2]" in text  # aggregate and beacon together
    assert "$.rules[3].aggregate.threshold: 0 is less than the minimum of 1" in text


def test_row_and_aggregation_rules_side_by_side(tmp_path: Path) -> None:
    row_rule = {"name": "ssh", "notify": ["hook"], "remote_port": [22]}
    cfg = config(tmp_path, row_rule, scan_rule())
    assert [r.name for r in cfg.rules] == ["ssh"]
    assert [r.name for r in cfg.aggregate_rules] == ["port-scan"]


def test_record_round_trip(tmp_path: Path) -> None:
    pipeline = Pipeline(config(tmp_path, scan_rule(threshold=2)))
    pipeline.aggregates.observe(event(1, remote_port=1, local_port=1))
    (alert,) = pipeline.aggregates.observe(event(2, remote_port=2, local_port=2))
    record = decode_record(encode_record(alert, 60.0), ("hook",))
    again = record.alert
    assert isinstance(again, AggregateAlert)
    assert again.as_dict() == alert.as_dict()
    assert record.members == (again,)
    assert record.dedup_window_secs == 60.0


def write(log: Path, lines: list[str]) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write("".join(item + "\n" for item in lines))


def outbox(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT payload FROM outbox ORDER BY rowid").fetchall()
    return [json.loads(payload) for (payload,) in rows]


def test_windows_survive_a_restart_and_count_once(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    cfg = config(tmp_path, scan_rule(threshold=4, window_secs=100), log=log)
    db = tmp_path / "state" / "state.sqlite3"
    write(log, [line(1, remote_port=1, local_port=1), line(2, remote_port=2, local_port=2)])
    conn = open_state(db)
    first = Pipeline(cfg, state=conn)
    first.poll_once()
    first.close()
    conn.close()
    assert outbox(open_state(db)) == []

    # The same process, two more ports, read by a new service process.
    write(log, [line(3, remote_port=3, local_port=3), line(4, remote_port=4, local_port=4)])
    conn = open_state(db)
    second = Pipeline(cfg, state=conn)
    assert second.aggregates.group_count("port-scan") == 1
    second.poll_once()
    write(log, [line(5, remote_port=5, local_port=5)])
    second.poll_once()
    second.close()
    queued = outbox(conn)
    assert len(queued) == 1
    assert queued[0]["aggregate"]["count"] == 4
    assert queued[0]["aggregate"]["first_time"] == 1
    assert second.stats.aggregate_alerts == 1


def test_a_late_line_counts_in_its_window_after_a_restart(tmp_path: Path) -> None:
    """A line older than the newest one seen (another host's file, a rotated file read
    late) belongs to a window that already alerted: it must not open a second window
    and alert again, neither within one run nor after a restart from the stored state
    (the in-memory loop keeps the group; the stored one must too)."""
    log = tmp_path / "results.log"
    cfg = config(tmp_path, scan_rule(threshold=3, window_secs=10), log=log)
    db = tmp_path / "state" / "state.sqlite3"
    scan = [line(100, remote_port=p, local_port=p) for p in (1, 2, 3)]
    write(log, [*scan, line(200, pid=7, remote_port=1, local_port=9)])
    conn = open_state(db)
    first = Pipeline(cfg, state=conn)
    first.poll_once()  # one batch: the crossing at 100, then time moves to 200
    first.close()
    conn.close()

    write(log, [line(105, remote_port=p, local_port=p) for p in (4, 5, 6)])
    conn = open_state(db)
    second = Pipeline(cfg, state=conn)
    second.poll_once()
    second.close()
    assert [(r["aggregate"]["first_time"], r["aggregate"]["count"]) for r in outbox(conn)] == [
        (100, 3)
    ]


def test_rolled_back_batch_is_counted_once_when_read_again(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    cfg = config(tmp_path, scan_rule(threshold=3, window_secs=100), log=log)
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    now = [0.0]
    pipeline = Pipeline(cfg, state=conn, monotonic=lambda: now[0])

    def poll() -> None:
        now[0] += 60.0  # past any pause after a failed commit
        pipeline.poll_once()

    write(log, [line(1, remote_port=1, local_port=1), line(2, remote_port=2, local_port=2)])
    conn.execute(
        "CREATE TRIGGER fail BEFORE INSERT ON checkpoints BEGIN SELECT RAISE(ABORT, 'x'); END"
    )
    poll()
    assert pipeline.stats.transaction_failures == 1
    conn.execute("DROP TRIGGER fail")
    assert pipeline.aggregates.group_count("port-scan") == 0  # dropped with the batch
    poll()  # the two lines again
    assert pipeline.aggregates.group_count("port-scan") == 1
    write(log, [line(3, remote_port=2, local_port=3)])  # a repeat port: still two distinct
    poll()
    assert outbox(conn) == []
    write(log, [line(4, remote_port=3, local_port=4)])
    poll()
    pipeline.close()
    assert [r["aggregate"]["count"] for r in outbox(conn)] == [3]


def test_replay_reads_files_in_time_order(tmp_path: Path) -> None:
    older = tmp_path / "results.log.1"
    newer = tmp_path / "results.log"
    write(older, [line(1, remote_port=1, local_port=1), line(2, remote_port=2, local_port=2)])
    write(newer, [line(50, remote_port=3, local_port=3)])
    out = io.BytesIO()
    cfg = config(tmp_path, scan_rule(threshold=3, window_secs=100))
    pipeline = Pipeline(cfg, PrintDispatcher(out))
    assert pipeline.replay([str(newer), str(older)]) == []
    alerts = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [a["aggregate"]["last_time"] for a in alerts] == [50]
    assert alerts[0]["notify"] == ["hook"]


def test_dedup_key_is_per_group(tmp_path: Path) -> None:
    agg = Pipeline(config(tmp_path, scan_rule(threshold=1, window_secs=10))).aggregates
    (first,) = agg.observe(event(1, remote_port=1, local_port=1))
    (next_window,) = agg.observe(event(20, remote_port=2, local_port=2))
    (other_pid,) = agg.observe(event(21, pid=99, remote_port=2, local_port=3))
    assert first.id != next_window.id  # a new window is a new alert ...
    keys = [silence_key("hook", a.as_dict()) for a in (first, next_window, other_pid)]
    assert keys[0] == keys[1]  # ... that the rule's dedup window silences
    assert keys[0] != keys[2]  # another group is not silenced


def test_severity_and_enabled_apply_as_for_row_rules(tmp_path: Path) -> None:
    rule = {**scan_rule(threshold=1), "severity": "high"}
    off = {**scan_rule(threshold=1), "name": "off", "enabled": False}
    pipeline = Pipeline(config(tmp_path, rule, off))
    (alert,) = pipeline.aggregates.observe(event(1))  # the disabled rule counts nothing
    assert alert.rule == "port-scan"
    assert alert.severity == "high"
    assert alert.as_dict()["severity"] == "high"
    assert decode_record(encode_record(alert), ("hook",)).alert.severity == "high"


def test_an_ioc_file_in_a_filter_is_reloaded_like_a_row_rules(tmp_path: Path) -> None:
    """A new version of an IOC file renamed into place counts for the aggregation
    rules too (they kept the list of the start, so a newly listed scanner was missed)."""
    iocs = tmp_path / "scan-targets.txt"
    iocs.write_text("192.0.2.1\n", encoding="utf-8")
    log = tmp_path / "results.log"
    rule = scan_rule(threshold=3, window_secs=100)
    rule["remote_address"] = {"include_files": [str(iocs)]}
    cfg = config(tmp_path, rule, log=log)
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    pipeline = Pipeline(cfg, state=conn)
    write(log, [line(t, remote_port=t, local_port=t) for t in (1, 2, 3)])  # to 10.0.0.9
    while pipeline.stats.events < 3:
        pipeline.poll_once()
    assert outbox(conn) == []  # not listed yet

    new = tmp_path / "scan-targets.txt.new"
    new.write_text("192.0.2.1\n10.0.0.0/24\n", encoding="utf-8")
    new.replace(iocs)
    assert pipeline.rules.refresh() == 1
    write(log, [line(t, remote_port=t, local_port=t) for t in (4, 5, 6)])
    while pipeline.stats.events < 6:
        pipeline.poll_once()
    pipeline.close()
    queued = outbox(conn)
    conn.close()
    assert [(q["aggregate"]["count"], q["aggregate"]["first_time"]) for q in queued] == [(3, 4)]
