"""Rotations while ``run`` is down, before its first start or between starts: nothing lost.

osqueryd rotates its results log (``log`` → ``.1`` → ``.2.zst`` …, plugins/logger/
logrotate.h, osquery 5.x) whether or not the alert service runs. Here lines are written
and the log rotated several times while the real ``python -m alert_service run`` is not
running: before its first ever start, after a start killed (SIGKILL) before it stored
any checkpoint, and between two starts. Then ``run`` is started and every line's alert
must be in the outbox exactly once.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from alerts_support import ScriptedEndpoint, osquery_rotate
from test_source_crash import outbox_ids, result_line, start, write_config

QUIET_SECS = 5.0  # no new alert for this long while lines remain: reading has stopped


def write_lines(log: Path, first: int, count: int) -> int:
    with open(log, "ab") as fh:
        for i in range(first, first + count):
            fh.write(result_line(i))
    return first + count


def expected_ids(lines: int) -> set[str]:
    from alert_service.match import alert_id  # noqa: PLC0415 - only here
    from alert_service.parse import parse_line  # noqa: PLC0415

    return {alert_id(parse_line(result_line(i).rstrip(b"\n"))[0]) for i in range(lines)}


def wait_for(db: Path, want: int) -> list[str]:
    """Wait until ``want`` alerts are queued or none arrived for QUIET_SECS; return them."""
    last, since = -1, time.monotonic()
    while True:
        found = outbox_ids(db)
        if len(found) >= want:
            time.sleep(0.5)  # anything extra would show up now
            return outbox_ids(db)
        if len(found) != last:
            last, since = len(found), time.monotonic()
        elif time.monotonic() - since > QUIET_SECS:
            return found
        time.sleep(0.1)


def checkpoint_count(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def lost(found: list[str], lines: int) -> list[int]:
    """Line numbers whose alert is missing (to show which generation was lost)."""
    from alert_service.match import alert_id  # noqa: PLC0415
    from alert_service.parse import parse_line  # noqa: PLC0415

    have = set(found)
    return [
        i for i in range(lines) if alert_id(parse_line(result_line(i).rstrip(b"\n"))[0]) not in have
    ]


def test_first_start_reads_generations_rotated_before_it(
    tmp_path: Path, receiver: ScriptedEndpoint
) -> None:
    log = tmp_path / "osqueryd.results.log"
    config = write_config(tmp_path, log, receiver.url)
    db = tmp_path / "state" / "state.sqlite3"
    n = 0
    for _ in range(3):  # → .3.zst, .2.zst, .1, live
        n = write_lines(log, n, 40)
        osquery_rotate(log)
    n = write_lines(log, n, 40)
    assert sorted(p.name for p in tmp_path.glob("osqueryd.results.log*")) == [
        "osqueryd.results.log",
        "osqueryd.results.log.1",
        "osqueryd.results.log.2.zst",
        "osqueryd.results.log.3.zst",
    ]
    proc = start(config, tmp_path / "service.log")
    try:
        found = wait_for(db, n)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    missing = lost(found, n)
    assert missing == [], f"lost lines {missing[:5]}..{missing[-5:]} ({len(missing)})"
    assert len(found) == len(set(found)) == n
    assert set(found) == expected_ids(n)


def test_killed_before_first_checkpoint_then_rotated_and_between_starts(
    tmp_path: Path, receiver: ScriptedEndpoint
) -> None:
    log = tmp_path / "osqueryd.results.log"
    config = write_config(tmp_path, log, receiver.url)
    db = tmp_path / "state" / "state.sqlite3"
    service_log = tmp_path / "service.log"
    n = write_lines(log, 0, 30)
    # 1. A start killed before it stored anything (still importing).
    proc = start(config, service_log)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert checkpoint_count(db) == 0
    for _ in range(2):
        osquery_rotate(log)
        n = write_lines(log, n, 30)
    # 2. A start that reads and commits, killed, then three rotations while down.
    proc = start(config, service_log)
    try:
        found = wait_for(db, n)
        assert lost(found, n) == []
        assert checkpoint_count(db) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        n = write_lines(log, n, 10)  # more in the checkpointed file, unread
        for _ in range(3):
            osquery_rotate(log)
            n = write_lines(log, n, 30)
        # 3. The last start reads the checkpointed file's rest and every newer generation.
        proc = start(config, service_log)
        found = wait_for(db, n)
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    missing = lost(found, n)
    assert missing == [], f"lost lines {missing[:5]}..{missing[-5:]} ({len(missing)})"
    assert len(found) == len(set(found)) == n
    assert set(found) == expected_ids(n)
    events = service_log.read_text("utf-8")
    assert "alerts_already_queued" not in events
    assert "source_checkpoint_missing" not in events
