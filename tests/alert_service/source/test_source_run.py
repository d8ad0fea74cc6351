"""The ``run`` path: followed files → outbox and checkpoints in one transaction.

Real files, a real SQLite state database; time is injected (wall clock for the outbox,
monotonic clock for polling and staleness) so long scenarios run at once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import zstandard
from alerts_support import FakeClock

from alert_service.config import Config, build_config
from alert_service.match import Alert, RuleSet
from alert_service.match.conditions import EventView
from alert_service.parse import Event
from alert_service.pipeline import Pipeline, PrintDispatcher
from alert_service.source import FileIdentity, Position, fingerprint, list_siblings
from alert_service.state import open_state
from alert_service.state.checkpoints import load_checkpoints, save_checkpoint
from alert_service.state.record import decode_record
from alert_service.stats import Stats

HOST = "web-01"


def event_line(
    remote: str,
    port: int = 443,
    *,
    counter: int = 3,
    epoch: int = 0,
    unix_time: int = 1756796709,
    action: str = "added",
    name: str = "curl",
    host: str = HOST,
    local_port: int = 40000,
) -> bytes:
    doc = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": host,
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": unix_time,
        "epoch": epoch,
        "counter": counter,
        "numerics": False,
        "columns": {
            "local_port": str(local_port),
            "name": name,
            "pid": "812",
            "remote_address": remote,
            "remote_port": str(port),
        },
        "action": action,
    }
    return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def make_config(tmp_path: Path, sources: list[dict[str, Any]], **extra: Any) -> Config:
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "sources": sources,
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [
            {
                "name": "ioc",
                "notify": ["local"],
                "actions": ["added", "removed"],
                "remote_address": {"include": ["198.51.100.0/24"]},
            },
            {"name": "shell-port", "notify": ["local"], "remote_port": [4444]},
        ],
    }
    doc.update(extra)
    return build_config(doc, "test.yaml", environ={})


WALL_START = 1_800_000_000.0


@pytest.fixture
def state(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    yield conn
    conn.close()


def new_pipeline(config: Config, state: sqlite3.Connection, clocks: FakeClock) -> Pipeline:
    return Pipeline(
        config,
        stats=Stats(),
        state=state,
        clock=lambda: clocks.now,
        monotonic=lambda: clocks.mono,
    )


def outbox(state: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = state.execute("SELECT payload FROM outbox ORDER BY rowid").fetchall()
    return [decode_record(row[0]).as_alert().as_dict() for row in rows]


def poll(pipeline: Pipeline, clocks: FakeClock, times: int = 1) -> None:
    for _ in range(times):
        clocks.advance(1.0)
        pipeline.poll_once()


def test_alerts_and_checkpoint_are_committed_together(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(event_line("198.51.100.7") + event_line("192.0.2.1") + b"not json\n")
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log), "start_at": "beginning"}])
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    alerts = outbox(state)
    assert [(a["rule"], a["connection"]["remote_address"]) for a in alerts] == [
        ("ioc", "198.51.100.7")
    ]
    (cp,) = load_checkpoints(state).values()
    assert cp.position.offset == log.stat().st_size
    assert cp.position.identity == FileIdentity.of(os.stat(log))
    assert cp.updated_at == clocks.now
    stats = pipeline.stats
    assert (stats.lines_read, stats.parse_errors, stats.alerts_enqueued) == (3, 1, 1)
    assert stats.transactions == 1
    poll(pipeline, clocks, 3)
    assert stats.transactions == 1  # nothing new: no empty transactions
    pipeline.close()


def test_a_failed_transaction_is_rolled_back_and_the_lines_read_again(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(event_line("198.51.100.1", local_port=1))
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log), "start_at": "beginning"}])
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    assert len(outbox(state)) == 1
    with open(log, "ab") as fh:
        fh.write(
            event_line("198.51.100.2", local_port=2) + event_line("198.51.100.3", local_port=3)
        )
    state.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "state" / "state.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with caplog.at_level(logging.ERROR, logger="alert_service"):
        poll(pipeline, clocks)
    assert "state_transaction_failed" in caplog.text
    assert pipeline.stats.transaction_failures == 1
    other.execute("ROLLBACK")
    other.close()
    poll(pipeline, clocks, 3)
    ports = sorted(a["connection"]["local_port"] for a in outbox(state))
    assert ports == [1, 2, 3]
    pipeline.close()


def test_glob_follows_each_file_and_finds_new_ones(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "osquery_result").write_bytes(
            event_line("198.51.100.9", host=host, local_port=1)
        )
    # A lumberjack backup beside it: never followed as a live log.
    (tmp_path / "a" / "osquery_result-2025-09-02T07-05-09.000").write_bytes(
        event_line("198.51.100.9", host="a-old")
    )
    clocks = FakeClock(now=WALL_START, mono=100.0)
    pattern = str(tmp_path / "*" / "osquery_result")
    config = make_config(
        tmp_path, [{"glob": pattern, "start_at": "end", "poll_interval_secs": 0.1}]
    )
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    assert outbox(state) == []  # start_at end: what existed at start is skipped
    assert sorted(load_checkpoints(state)) == [
        str(tmp_path / "a" / "osquery_result"),
        str(tmp_path / "b" / "osquery_result"),
    ]
    with open(tmp_path / "a" / "osquery_result", "ab") as fh:
        fh.write(event_line("198.51.100.9", host="a", local_port=2))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "osquery_result").write_bytes(event_line("198.51.100.9", host="c"))
    poll(pipeline, clocks, 3)
    assert sorted(a["host"] for a in outbox(state)) == ["a", "c"]  # c is new: read whole
    assert pipeline.stats.sources_followed == 3
    pipeline.close()


def test_stale_source_warns_once_and_recovers(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"")
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(
        tmp_path, [{"path": str(log), "start_at": "beginning", "stale_after_secs": 30}]
    )
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks, 29)
        assert pipeline.stats.stale_sources == 0
        poll(pipeline, clocks, 5)
        assert pipeline.stats.stale_sources == 1
        assert caplog.text.count("source_stale") == 1
        with open(log, "ab") as fh:
            fh.write(event_line("192.0.2.1"))
        poll(pipeline, clocks)
        assert pipeline.stats.stale_sources == 0
        assert "source_active_again" in caplog.text
    assert pipeline.stats.staleness_warnings == 1
    assert pipeline.stats.source_last_line_time[str(log)] == clocks.now - 0.0
    pipeline.close()


def test_old_checkpoints_of_files_not_followed_expire(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    clocks = FakeClock(now=WALL_START, mono=100.0)
    gone = Position("/gone.log", FileIdentity(1, 2), 10, fingerprint(b"x"), 1)
    save_checkpoint(state, "/gone.log", gone, clocks.now - 8 * 86400)
    save_checkpoint(state, "/recent.log", gone, clocks.now - 3600)
    log = tmp_path / "osqueryd.results.log"
    config = make_config(tmp_path, [{"path": str(log)}])
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    assert sorted(load_checkpoints(state)) == ["/recent.log"]
    pipeline.close()


def test_an_unexpected_error_skips_only_that_line(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    class Exploding(RuleSet):
        def match(self, event: Event, view: EventView | None = None) -> list[Alert]:
            if event.host_identifier == "boom":
                raise RuntimeError("bug")
            return super().match(event, view)

    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(
        event_line("198.51.100.1", host="boom") + event_line("198.51.100.2", host="fine")
    )
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log), "start_at": "beginning"}])
    pipeline = new_pipeline(config, state, clocks)
    pipeline.rules = Exploding(config.rules)
    with caplog.at_level(logging.WARNING, logger="alert_service"):
        poll(pipeline, clocks)
    assert [a["host"] for a in outbox(state)] == ["fine"]
    assert pipeline.stats.processing_errors == 1
    assert "line_processing_failed" in caplog.text
    pipeline.close()


# -- baseline ----------------------------------------------------------------------


def baseline_config(tmp_path: Path, log: Path) -> Config:
    return make_config(
        tmp_path,
        [{"path": str(log), "start_at": "beginning"}],
        rules=[
            {
                "name": "ioc",
                "notify": ["local"],
                "actions": ["added", "removed"],
                "remote_address": {"include": ["198.51.100.0/24"]},
            },
            {
                "name": "shell-port",
                "notify": ["local"],
                "remote_port": [4444],
                "baseline": "digest",
            },
            {
                "name": "ssh-out",
                "notify": ["local"],
                "process": {"name": {"exact": ["ssh"]}},
                "baseline": "none",
            },
        ],
    )


def test_baseline_run_alerts_only_new_rows_per_rule_mode(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "osqueryd.results.log"
    t0 = 1756796709
    log.write_bytes(
        event_line("198.51.100.7", local_port=1, counter=5, unix_time=t0)  # alerted, tracked
        + event_line("198.51.100.99", local_port=9, counter=6, unix_time=t0 + 10)  # tracked
    )
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = baseline_config(tmp_path, log)
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    assert len(outbox(state)) == 2
    # osquery lost its database: counter 0, every current row logged again as added.
    t1 = t0 + 100
    with open(log, "ab") as fh:
        for line in (
            event_line("198.51.100.7", local_port=1, counter=0, unix_time=t1),  # known
            event_line("198.51.100.8", local_port=2, counter=0, unix_time=t1),  # new IOC
            event_line("203.0.113.1", 4444, local_port=3, counter=0, unix_time=t1),  # digest
            event_line("203.0.113.2", 4444, local_port=4, counter=0, unix_time=t1),  # digest
            event_line("203.0.113.3", 22, name="ssh", counter=0, unix_time=t1),  # none
            event_line("192.0.2.1", local_port=6, counter=0, unix_time=t1),  # no rule
        ):
            fh.write(line)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks)
    new = outbox(state)[2:]
    assert [(a["rule"], a["connection"]["local_port"], a.get("kind")) for a in new] == [
        ("ioc", 2, None),
        ("shell-port", 3, "baseline_digest"),
    ]
    digest = new[1]
    assert digest["row_count"] == 2
    assert [row["local_port"] for row in digest["rows"]] == [3, 4]
    assert len(digest["alert_ids"]) == 2
    stats = pipeline.stats
    assert (stats.baseline_rows_known, stats.baseline_rows_new) == (1, 4)
    assert (stats.baseline_rows_suppressed, stats.baseline_digests) == (1, 1)
    assert "baseline_row_suppressed" in caplog.text
    # The next regular run ends the baseline run: the row it did not log again is gone.
    with open(log, "ab") as fh:
        fh.write(event_line("192.0.2.50", counter=1, unix_time=t1 + 10))
    poll(pipeline, clocks)
    tracked = {
        row[0] for row in state.execute("SELECT row_hash FROM active_rows WHERE host = ?", (HOST,))
    }
    assert len(tracked) == 5  # ports 1, 2, 3, 4 and the ssh row; port 9 was pruned
    pipeline.close()

    # A restart (new pipeline, same database) and an epoch change: all known.
    later = new_pipeline(config, state, clocks)
    before = len(outbox(state))
    with open(log, "ab") as fh:
        for port in (1, 2):
            fh.write(event_line(f"198.51.100.{6 + port}", local_port=port, counter=0, epoch=1))
    poll(later, clocks)
    assert len(outbox(state)) == before
    assert later.stats.baseline_rows_known == 2
    # Removed rows leave the set; re-logged later by a baseline run they alert again.
    with open(log, "ab") as fh:
        fh.write(event_line("198.51.100.8", local_port=2, counter=1, epoch=1, action="removed"))
        fh.write(event_line("198.51.100.8", local_port=2, counter=0, epoch=2))
    poll(later, clocks)
    assert [(a["rule"], a["action"]) for a in outbox(state)[before:]] == [
        ("ioc", "removed"),
        ("ioc", "added"),
    ]
    later.close()


def test_default_baseline_mode_never_drops_an_ioc_match(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"".join(event_line(f"198.51.100.{i}", counter=0) for i in range(1, 4)))
    config = make_config(tmp_path, [{"path": str(log), "start_at": "beginning"}])
    clocks = FakeClock(now=WALL_START, mono=100.0)
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks)
    assert len(outbox(state)) == 3
    pipeline.close()


def test_replay_reads_compressed_logs_and_applies_the_baseline(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log.2.zst"
    data = event_line("198.51.100.7", counter=4) + event_line("198.51.100.7", counter=0)
    log.write_bytes(zstandard.ZstdCompressor().compress(data))
    collected: list[Alert] = []

    class Collect:
        def dispatch(self, alert: Alert) -> None:
            collected.append(alert)

        def close(self) -> None:
            pass

    config = make_config(tmp_path, [{"path": str(tmp_path / "unused.log")}])
    pipeline = Pipeline(config, Collect())
    assert pipeline.replay([str(log)]) == []
    assert [(a.rule, a.event.counter) for a in collected] == [("ioc", 4)]


def test_a_file_named_by_a_path_and_a_glob_is_read_once(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(event_line("198.51.100.7"))
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(
        tmp_path,
        [
            {"glob": str(tmp_path / "*.log"), "start_at": "beginning"},
            {"path": str(log), "start_at": "beginning"},
        ],
    )
    pipeline = new_pipeline(config, state, clocks)
    poll(pipeline, clocks, 3)
    assert len(outbox(state)) == 1
    assert pipeline.stats.sources_followed == 1
    assert pipeline.stats.alerts_enqueued == 1
    pipeline.close()


def logged_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [dict(getattr(r, "alert_fields", {})) for r in caplog.records if r.getMessage() == name]


def test_missing_source_is_logged_repeated_counted_and_found(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding: a source path that does not exist was silently waited for; the
    # first sign was source_stale 300 s later.
    log = tmp_path / "logs" / "osqueryd.results.log"
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log), "start_at": "end"}])
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks)
        (first,) = logged_events(caplog, "source_missing")
        assert first["path"] == str(log)
        assert first["reason"] == "no such file"
        assert "--logger_path" in first["hint"]
        assert "filesystem.result_log_file" in first["hint"]
        assert f"uid {os.geteuid()}" in first["hint"]
        stats = pipeline.stats
        assert (stats.sources_missing, stats.sources_unreadable, stats.sources_followed) == (
            1,
            0,
            0,
        )
        assert stats.source_problems == {str(log): "missing: no such file"}
        # Repeated at most every 10 minutes while it stays missing.
        poll(pipeline, clocks, 598)
        assert len(logged_events(caplog, "source_missing")) == 1
        poll(pipeline, clocks, 3)
        repeats = logged_events(caplog, "source_missing")
        assert len(repeats) == 2
        assert repeats[1]["missing_secs"] >= 600
        # It appears: found, read whole (it did not exist at start), gauges back to 0.
        log.parent.mkdir()
        log.write_bytes(event_line("198.51.100.7"))
        poll(pipeline, clocks)
        (found,) = logged_events(caplog, "source_found")
        assert found["path"] == str(log)
        assert found["missing_secs"] >= 600
    assert [a["connection"]["remote_address"] for a in outbox(state)] == ["198.51.100.7"]
    assert (stats.sources_missing, stats.sources_unreadable, stats.sources_followed) == (0, 0, 1)
    assert stats.source_problems == {}
    pipeline.close()


def test_glob_matching_nothing_is_missing(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    pattern = str(tmp_path / "*" / "osquery_result")
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"glob": pattern, "poll_interval_secs": 0.1}])
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks)
        (missing,) = logged_events(caplog, "source_missing")
        assert missing["path"] == pattern
        assert missing["reason"] == "no file matches"
        assert pipeline.stats.source_problems == {pattern: "missing: no file matches"}
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "osquery_result").write_bytes(event_line("198.51.100.8"))
        poll(pipeline, clocks, 2)
        assert logged_events(caplog, "source_found")[0]["path"] == pattern
    assert pipeline.stats.sources_missing == 0
    assert [a["connection"]["remote_address"] for a in outbox(state)] == ["198.51.100.8"]
    pipeline.close()


def test_source_that_cannot_be_opened_is_unreadable_not_missing(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.mkdir()  # a directory: open() fails with EISDIR, a real OSError that is not ENOENT
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log)}])
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks, 3)
        (bad,) = logged_events(caplog, "source_unreadable")
    assert bad["path"] == str(log)
    assert bad["reason"] == "Is a directory (EISDIR)"
    assert not logged_events(caplog, "source_missing")
    stats = pipeline.stats
    assert (stats.sources_missing, stats.sources_unreadable) == (0, 1)
    assert stats.source_problems == {str(log): "unreadable: Is a directory (EISDIR)"}
    pipeline.close()


def unreadable_file(tmp_path: Path) -> Path:
    """A real file this process cannot open for reading (EACCES)."""
    if os.geteuid() != 0:
        path = tmp_path / "osqueryd.results.log"
        path.write_bytes(event_line("198.51.100.7"))
        path.chmod(0)
        return path
    # root reads any file whatever its mode; a write-only sysctl file is the exception
    # (proc_sys_permission does not let root read a mode 0200 entry).
    path = Path("/proc/sys/vm/drop_caches")
    try:
        path.open("rb").close()
    except PermissionError:
        return path
    pytest.skip("no file here that this process cannot read")


def test_permission_denied_source_is_logged_with_a_hint(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    log = unreadable_file(tmp_path)
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log)}])
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks, 3)
        (bad,) = logged_events(caplog, "source_unreadable")
        # Once (again at most every 10 minutes), not on every poll; one event per problem.
        assert "source_open_failed" not in caplog.text
    assert bad["path"] == str(log)
    assert bad["reason"] == "Permission denied (EACCES)"
    assert f"readable by this user (uid {os.geteuid()}" in bad["hint"]
    assert pipeline.stats.sources_unreadable == 1
    assert pipeline.stats.source_problems == {str(log): "unreadable: Permission denied (EACCES)"}
    pipeline.close()


def test_partial_line_glued_to_the_next_line_keeps_the_good_row(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # A writer crashed mid-line (no newline), then a complete line was appended: the
    # file holds <partial>{"name":...}\n. The partial is a malformed fragment; the
    # complete line after it must not be lost.
    first = event_line("198.51.100.1")
    partial = event_line("198.51.100.2")[:220]  # cut inside "columns"
    assert b'{"' in partial[1:]  # the fragment itself holds a later {" (columns)
    good = event_line("198.51.100.3")
    junk = b'garbage {"not": json at all}\n'  # no valid object to the end: a parse error
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(first + partial + good + junk)
    clocks = FakeClock(now=WALL_START, mono=100.0)
    config = make_config(tmp_path, [{"path": str(log), "start_at": "beginning"}])
    pipeline = new_pipeline(config, state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks)
    assert [a["connection"]["remote_address"] for a in outbox(state)] == [
        "198.51.100.1",
        "198.51.100.3",
    ]
    stats = pipeline.stats
    assert (stats.lines_read, stats.malformed_fragments, stats.parse_errors) == (3, 1, 1)
    (skipped,) = logged_events(caplog, "line_fragment_skipped")
    assert skipped["path"] == str(log)
    assert skipped["offset"] == len(first)
    assert skipped["fragment_bytes"] == len(partial)
    assert skipped["line_offset"] == len(first) + len(partial)
    (failed,) = logged_events(caplog, "line_parse_failed")
    assert failed["offset"] == len(first) + len(partial) + len(good)
    pipeline.close()

    # replay reads the same file the same way.
    replayed = Pipeline(config, PrintDispatcher(io.BytesIO()), Stats())
    stream = cast(io.BytesIO, cast(PrintDispatcher, replayed.dispatcher).stream)
    assert replayed.replay([str(log)]) == []
    hosts = [json.loads(x)["connection"]["remote_address"] for x in stream.getvalue().splitlines()]
    assert hosts == ["198.51.100.1", "198.51.100.3"]
    assert replayed.stats.malformed_fragments == 1


def test_replay_and_run_report_the_same_offset_for_an_unterminated_last_line(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # printf 'good\nbad-partial': the second line starts at byte 5 (its first byte).
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"good\nbad-partial")
    config = make_config(
        tmp_path, [{"path": str(log), "start_at": "beginning", "partial_line_flush_secs": 2}]
    )
    with caplog.at_level(logging.INFO, logger="alert_service"):
        replayed = Pipeline(config, PrintDispatcher(io.BytesIO()), Stats())
        assert replayed.replay([str(log)]) == []
        replay_offsets = [e["offset"] for e in logged_events(caplog, "line_parse_failed")]
        caplog.clear()
        clocks = FakeClock(now=WALL_START, mono=100.0)
        pipeline = new_pipeline(config, state, clocks)
        poll(pipeline, clocks)
        log.unlink()  # finished: its unterminated tail is flushed as a line
        poll(pipeline, clocks, 4)
        run_offsets = [e["offset"] for e in logged_events(caplog, "line_parse_failed")]
    assert replay_offsets == run_offsets == [0, 5]
    pipeline.close()


def test_glob_whose_directory_cannot_be_listed_is_unreadable(
    tmp_path: Path, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # glob.glob() returns nothing, silently, for a directory it cannot list; a file
    # where the directory should be gives a real ENOTDIR even as root.
    blocker = tmp_path / "fleet"
    blocker.write_bytes(b"")
    pattern = str(blocker / "*" / "osquery_result")
    clocks = FakeClock(now=WALL_START, mono=100.0)
    pipeline = new_pipeline(make_config(tmp_path, [{"glob": pattern}]), state, clocks)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        poll(pipeline, clocks)
        (bad,) = logged_events(caplog, "source_unreadable")
    assert (bad["path"], bad["reason"]) == (pattern, "Not a directory (ENOTDIR)")
    assert pipeline.stats.source_problems == {pattern: "unreadable: Not a directory (ENOTDIR)"}
    pipeline.close()


def test_a_directory_that_cannot_be_listed_is_logged_when_looking_for_rotated_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "osquery"
    blocker.write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="alert_service"):
        assert list_siblings(str(blocker / "osqueryd.results.log")) == []
        (logged,) = logged_events(caplog, "source_directory_unreadable")
    assert logged["directory"] == str(blocker)
    assert logged["reason"] == "Not a directory"


def test_source_problems_are_forgotten_when_the_pipeline_starts_again(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    clocks = FakeClock(now=WALL_START, mono=100.0)
    pipeline = new_pipeline(make_config(tmp_path, [{"path": str(log)}]), state, clocks)
    poll(pipeline, clocks)
    assert pipeline.stats.sources_missing == 1
    pipeline.close()
    log.write_bytes(b"")
    poll(pipeline, clocks)  # polled again after close(): starts over
    assert (pipeline.stats.sources_missing, pipeline.stats.source_problems) == (0, {})
    assert pipeline.stats.sources_followed == 1
    pipeline.close()


def test_file_source_problems_leave_another_source_kinds_problems_alone(
    tmp_path: Path, state: sqlite3.Connection
) -> None:
    # A configuration may hold file and nats sources; each kind publishes its own
    # problems into the one dict /health reads (the nats source copies it and sets
    # its own names, alert_service/source/nats.py).
    log = tmp_path / "osqueryd.results.log"
    clocks = FakeClock(now=WALL_START, mono=100.0)
    pipeline = new_pipeline(make_config(tmp_path, [{"path": str(log)}]), state, clocks)
    stream_problem = {"osquery-results": "unreachable: connection refused"}
    pipeline.stats.source_problems = dict(stream_problem)
    poll(pipeline, clocks)
    assert pipeline.stats.source_problems == {
        **stream_problem,
        str(log): "missing: no such file",
    }
    log.write_bytes(b"")
    poll(pipeline, clocks, 4)
    assert pipeline.stats.source_problems == stream_problem
    pipeline.close()
    assert pipeline.stats.source_problems == stream_problem
