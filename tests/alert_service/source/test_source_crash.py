"""kill -9 the running service at random points: no alert lost, none repeated.

A writer thread appends unique result lines to a real osquery-style results log and
rotates it the way osquery's filesystem logger does (``log`` → ``.1``, ``.1`` →
``.2.zst``, older ``.N.zst`` shifted up; plugins/logger/logrotate.h), sometimes writing
a line in two pieces. Meanwhile ``python -m alert_service run`` is started, SIGKILLed
a random time after it logged that it started (or, now and then, at once while it is
still importing, before it stored any checkpoint), and started again, several times;
rotations therefore happen both while it runs and while it is down. The last run is
waited for until every alert is there or none arrived for ``QUIET_SECS`` (a busy host
slows it down; it does not stop it). At the end every line's alert must be in the
outbox table of the state database exactly once, and no run may have enqueued an alert
that was already there (which would show a line read again after its commit).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from alerts_support import REPO_ROOT, ScriptedEndpoint, osquery_rotate

LINES = 2400
ROTATE_EVERY = 300
KILLS = 7
QUIET_SECS = 10.0  # the last run gave no new alert for this long: it has stopped reading
STARTUP_WAIT_SECS = 120.0  # a start not logged by then is killed anyway (and counted so)
KILL_DURING_IMPORT = 0.2  # share of starts killed at once, before any checkpoint


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def result_line(i: int) -> bytes:
    doc = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": f"host-{i % 7}",
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709 + i,
        "epoch": 0,
        "counter": 1 + i,
        "numerics": False,
        "columns": {
            "local_address": "10.1.2.3",
            "local_port": str(1024 + i % 60000),
            "pid": str(100 + i),
            "remote_address": f"198.51.100.{i % 250}",
            "remote_port": "4444",
            "name": "nc",
        },
        "action": "added",
    }
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def writer(log: Path, done: threading.Event, rnd: random.Random) -> None:
    for i in range(LINES):
        line = result_line(i)
        if i and i % ROTATE_EVERY == 0:
            osquery_rotate(log)
        with open(log, "ab") as fh:
            if rnd.random() < 0.1:
                cut = rnd.randrange(1, len(line) - 1)
                fh.write(line[:cut])
                fh.flush()
                time.sleep(0.002)
                fh.write(line[cut:])
            else:
                fh.write(line)
        time.sleep(rnd.uniform(0.0, 0.012))
    done.set()


def write_config(tmp_path: Path, log: Path, url: str) -> Path:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
log_level: debug
state_dir: {tmp_path / "state"}
sources:
  - path: {log}
    start_at: beginning
    poll_interval_secs: 0.02
    partial_line_flush_secs: 0.5
notifiers:
  - name: local
    type: webhook
    url: {url}
rules:
  - name: everything
    notify: [local]
    actions: [added]
""",
        encoding="utf-8",
    )
    return config


def start(config: Path, stderr_path: Path) -> subprocess.Popen[bytes]:
    with open(stderr_path, "ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def started_count(stderr_path: Path) -> int:
    """How many ``service_started`` events the service log holds so far."""
    if not stderr_path.exists():
        return 0
    count = 0
    for line in stderr_path.read_bytes().splitlines():
        try:
            count += json.loads(line).get("event") == "service_started"
        except ValueError:
            continue  # a line being written
    return count


def wait_started(proc: subprocess.Popen[bytes], stderr_path: Path, before: int) -> bool:
    """Wait until ``proc`` logged that it started (slow imports on a busy host)."""
    deadline = time.monotonic() + STARTUP_WAIT_SECS
    while time.monotonic() < deadline and proc.poll() is None:
        if started_count(stderr_path) > before:
            return True
        time.sleep(0.05)
    return False


def wait_quiet(db: Path, want: int) -> None:
    """Wait until ``want`` alerts are queued, or none was added for QUIET_SECS."""
    last, since = -1, time.monotonic()
    while True:
        count = len(outbox_ids(db))
        if count >= want:
            return
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > QUIET_SECS:
            return
        time.sleep(0.2)


def outbox_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return [row[0] for row in conn.execute("SELECT alert_id FROM outbox")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_kill_9_at_random_points_neither_loses_nor_repeats(
    tmp_path: Path, receiver: ScriptedEndpoint
) -> None:
    rnd = random.Random(int(os.environ.get("KILL_TEST_SEED", "0")) or time.time_ns())
    log = tmp_path / "osqueryd.results.log"
    config = write_config(tmp_path, log, receiver.url)
    db = tmp_path / "state" / "state.sqlite3"
    stderr_path = tmp_path / "service.log"
    done = threading.Event()
    thread = threading.Thread(target=writer, args=(log, done, random.Random(rnd.random())))
    thread.start()
    kills = 0
    started = 0  # runs that logged service_started before their kill
    try:
        while kills < KILLS and not done.is_set():
            before = started_count(stderr_path)
            proc = start(config, stderr_path)
            if rnd.random() >= KILL_DURING_IMPORT:
                # Kill at a random point of a running service, not while it imports.
                if wait_started(proc, stderr_path, before):
                    started += 1
                time.sleep(rnd.uniform(0.1, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            if rnd.random() < 0.3:
                time.sleep(rnd.uniform(0.1, 0.8))  # rotations happen while it is down
        thread.join(60)
        assert done.is_set()
        proc = start(config, stderr_path)
        wait_quiet(db, LINES)
        time.sleep(0.5)  # anything extra would show up now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        done.set()
        thread.join(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    from alert_service.match import alert_id  # noqa: PLC0415 - only here
    from alert_service.parse import parse_line  # noqa: PLC0415

    expected = {alert_id(parse_line(result_line(i).rstrip(b"\n"))[0]) for i in range(LINES)}
    found = outbox_ids(db)
    logs = [json.loads(line) for line in stderr_path.read_text("utf-8").splitlines()]
    events = [entry["event"] for entry in logs]
    print(
        f"kill -9 test: lines written {LINES}, alerts expected {len(expected)}, "
        f"alerts found {len(found)} (distinct {len(set(found))}), kills {kills}, "
        f"rotations {LINES // ROTATE_EVERY - (LINES % ROTATE_EVERY == 0)}, "
        f"resumes {events.count('source_resumed') + events.count('source_resumed_rotated')}, "
        f"runs killed after starting {started}"
    )
    if len(set(found)) < LINES:
        have = set(found)
        lost = [
            i
            for i in range(LINES)
            if alert_id(parse_line(result_line(i).rstrip(b"\n"))[0]) not in have
        ]
        print(
            "lost lines by generation (line // ROTATE_EVERY):",
            {
                g: sum(1 for i in lost if i // ROTATE_EVERY == g)
                for g in sorted({i // ROTATE_EVERY for i in lost})
            },
        )
    assert kills >= 3
    assert len(found) == len(set(found)) == LINES
    assert set(found) == expected
    assert "alerts_already_queued" not in events
    assert "source_checkpoint_missing" not in events
    assert "source_truncated" not in events
    assert "line_parse_failed" not in events
    # A kill may land before a process has logged that it started (slow imports on a busy
    # host); each process logs it at most once, and the last one started and stopped cleanly.
    assert started >= 1
    assert started + 1 <= events.count("service_started") <= kills + 1
    assert events[-1] == "service_stopped"
