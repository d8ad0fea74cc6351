"""Resuming from a checkpoint after a stop, whatever happened to the files meanwhile.

A first :class:`FileFollower` reads and stops (its :meth:`position` is the checkpoint,
stored and loaded through the real state database); the files are then rotated,
compressed, truncated or deleted for real; a second follower resumes from the stored
checkpoint (docs/design/following-logs.md: identity plus head fingerprint, finish
the rotated file first, never trust an offset past the end).
"""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import zstandard
from alerts_support import osquery_rotate

from alert_service.source import (
    FINGERPRINT_BYTES,
    FileFollower,
    FileIdentity,
    Position,
    SourceLine,
    fingerprint,
)
from alert_service.state import open_state
from alert_service.state.checkpoints import (
    delete_checkpoint,
    expire_checkpoints,
    load_checkpoint,
    load_checkpoints,
    save_checkpoint,
)
from alert_service.stats import Stats


def append(path: Path | str, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def texts(lines: Iterable[SourceLine]) -> list[bytes]:
    return [line.line for line in lines]


def read_all(follower: FileFollower) -> list[bytes]:
    out: list[bytes] = []
    while True:
        out += texts(follower.poll())
        if not follower.has_more:
            return out


def stop_and_store(follower: FileFollower, db: sqlite3.Connection, source: str) -> float:
    """Store the follower's position as ``run`` does, then close it (the stop)."""
    position = follower.position()
    assert position is not None
    now = time.time()
    save_checkpoint(db, source, position, now)
    follower.close()
    return now


def read_and_stop(log: Path, db: sqlite3.Connection) -> float:
    """A first run: read ``log`` from the beginning to its end, then stop.

    Returns:
        when the checkpoint was stored, seconds since the Unix epoch.
    """
    first = FileFollower(str(log), start_at="beginning")
    read_all(first)
    return stop_and_store(first, db, str(log))


def resume(db: sqlite3.Connection, source: str, stats: Stats | None = None) -> FileFollower:
    stored = load_checkpoint(db, source)
    assert stored is not None
    return FileFollower(
        source,
        start_at="end",  # ignored: there is a checkpoint
        checkpoint=stored.position,
        checkpoint_time=stored.updated_at,
        stats=stats,
        partial_line_flush_secs=0,
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterable[sqlite3.Connection]:
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    yield conn
    conn.close()


def lines(prefix: str, count: int) -> bytes:
    return b"".join(f"{prefix}-{i:04d} {'x' * 60}\n".encode() for i in range(count))


def test_resume_in_the_same_file_reads_only_what_is_new(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, lines("a", 30))
    first = FileFollower(str(log), start_at="beginning")
    assert len(read_all(first)) == 30
    stop_and_store(first, db, str(log))
    append(log, lines("b", 2))
    stats = Stats()
    with resume(db, str(log), stats) as second:
        got = read_all(second)
    assert [g[:6] for g in got] == [b"b-0000", b"b-0001"]
    assert (stats.truncations, stats.possible_data_loss) == (0, 0)


def test_rotation_while_stopped_finishes_the_rotated_file_first(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, lines("a", 20))
    read_and_stop(log, db)
    append(log, lines("a-late", 3))
    osquery_rotate(log)
    append(log, lines("b", 2))
    with resume(db, str(log)) as second:
        got = read_all(second)
    assert [g.split()[0] for g in got] == [
        b"a-late-0000",
        b"a-late-0001",
        b"a-late-0002",
        b"b-0000",
        b"b-0001",
    ]


def test_several_rotations_while_stopped_read_compressed_then_plain_then_live(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, lines("a", 40))
    read_and_stop(log, db)
    append(log, lines("a-late", 2))
    osquery_rotate(log)  # a → .1
    append(log, lines("b", 3))
    osquery_rotate(log)  # a → .2.zst, b → .1
    append(log, lines("c", 1))
    osquery_rotate(log)  # a → .3.zst, b → .2.zst, c → .1
    append(log, lines("d", 1))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("osq")) == [
        "osqueryd.results.log",
        "osqueryd.results.log.1",
        "osqueryd.results.log.2.zst",
        "osqueryd.results.log.3.zst",
    ]
    with resume(db, str(log)) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [
        b"a-late-0000",
        b"a-late-0001",
        b"b-0000",
        b"b-0001",
        b"b-0002",
        b"c-0000",
        b"d-0000",
    ]


def test_stop_while_draining_a_compressed_file_resumes_inside_it(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, lines("a", 5))
    read_and_stop(log, db)
    append(log, lines("a-late", 3000))
    osquery_rotate(log)  # a → .1
    append(log, lines("b", 1))
    osquery_rotate(log)  # a → .2.zst, b → .1
    append(log, lines("c", 1))
    # Read a little of a (a small budget per poll), then stop again inside .2.zst.
    stored = load_checkpoint(db, str(log))
    assert stored is not None
    second = FileFollower(str(log), checkpoint=stored.position, max_read_bytes_per_poll=64 * 1024)
    part = texts(second.poll())
    assert second.has_more
    position = second.position()
    assert position is not None and position.path.endswith(".2.zst")
    save_checkpoint(db, str(log), position, time.time())
    second.close()
    with resume(db, str(log)) as third:
        rest = read_all(third)
    names = [g.split()[0] for g in part + rest]
    assert names == [f"a-late-{i:04d}".encode() for i in range(3000)] + [b"b-0000", b"c-0000"]


def test_fleet_rotation_with_gzip_while_stopped(tmp_path: Path, db: sqlite3.Connection) -> None:
    log = tmp_path / "osquery_result"
    append(log, lines("a", 10))
    read_and_stop(log, db)
    append(log, lines("a-late", 1))
    backup = tmp_path / "osquery_result-2025-09-02T07-05-09.000"
    os.rename(log, backup)
    with open(backup, "rb") as src, gzip.open(f"{backup}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    backup.unlink()
    append(log, lines("b", 1))
    with resume(db, str(log)) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [b"a-late-0000", b"b-0000"]


def test_copytruncate_while_stopped_reads_the_copy_then_the_live_file(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "results.log"
    append(log, lines("a", 10))
    read_and_stop(log, db)
    append(log, lines("a-late", 2))
    shutil.copyfile(log, tmp_path / "results.log.1")
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, lines("b", 1))
    stats = Stats()
    with resume(db, str(log), stats) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [b"a-late-0000", b"a-late-0001", b"b-0000"]
    assert stats.possible_data_loss == 0  # the copy held everything


def test_truncation_while_stopped_without_a_copy_counts_a_possible_loss(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "results.log"
    append(log, lines("a", 10))
    read_and_stop(log, db)
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, lines("b", 2))
    stats = Stats()
    with resume(db, str(log), stats) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [b"b-0000", b"b-0001"]
    assert (stats.truncations, stats.possible_data_loss) == (1, 1)


def test_regrown_past_the_offset_while_stopped_is_seen_by_the_fingerprint(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "results.log"
    append(log, lines("a", 2))
    read_and_stop(log, db)
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, lines("b", 5))  # longer than before: only the head tells
    stats = Stats()
    with resume(db, str(log), stats) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [f"b-{i:04d}".encode() for i in range(5)]
    assert stats.truncations == 1


def test_inode_reused_by_another_file_is_read_from_the_start(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "results.log"
    append(log, lines("new", 3))
    st = os.stat(log)
    # A checkpoint of an older, deleted file that had this very (device, inode).
    old_head = lines("old", 20)[:FINGERPRINT_BYTES]
    stale = Position(str(log), FileIdentity(st.st_dev, st.st_ino), 900, fingerprint(old_head), 1024)
    stats = Stats()
    with FileFollower(str(log), checkpoint=stale, stats=stats) as follower:
        got = [g.split()[0] for g in read_all(follower)]
    assert got == [b"new-0000", b"new-0001", b"new-0002"]
    assert stats.possible_data_loss == 1


def test_checkpoint_file_gone_reads_siblings_written_after_the_checkpoint(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, lines("a", 3))
    stored_at = read_and_stop(log, db)
    older = Path(f"{log}.3.zst")  # a file older than the checkpoint: not read
    older.write_bytes(zstandard.ZstdCompressor().compress(lines("old", 1)))
    os.utime(older, (stored_at - 3600, stored_at - 3600))
    log.unlink()  # the checkpointed file is gone (deleted by hand, max files, ...)
    append(f"{log}.1", lines("b", 1))
    os.utime(f"{log}.1", (stored_at + 1, stored_at + 1))
    append(log, lines("c", 1))
    stats = Stats()
    with resume(db, str(log), stats) as second:
        got = [g.split()[0] for g in read_all(second)]
    assert got == [b"b-0000", b"c-0000"]
    assert stats.possible_data_loss == 1


def test_short_file_fingerprint_grows_with_the_file(tmp_path: Path, db: sqlite3.Connection) -> None:
    log = tmp_path / "results.log"
    append(log, b"short-1\n")
    first = FileFollower(str(log), start_at="beginning")
    assert read_all(first) == [b"short-1"]
    position = first.position()
    assert position is not None
    assert position.fingerprint_bytes == 8
    append(log, lines("x", 30))
    read_all(first)
    grown = first.position()
    assert grown is not None
    assert grown.fingerprint_bytes == FINGERPRINT_BYTES
    assert grown.fingerprint == fingerprint(log.read_bytes()[:FINGERPRINT_BYTES])
    stop_and_store(first, db, str(log))
    # The short checkpoint still matches the grown file (its first 8 bytes are the same).
    with FileFollower(str(log), checkpoint=position) as again:
        assert len(read_all(again)) == 30
    append(log, b"after\n")
    with resume(db, str(log)) as second:
        assert read_all(second) == [b"after"]


def test_start_at_end_checkpoint_is_never_inside_a_line(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"old\nhalf-writ")
    follower = FileFollower(str(log), start_at="end")
    assert follower.poll() == []
    position = follower.position()
    assert position is not None and position.offset == 4
    follower.close()


def test_checkpoint_rows_round_trip_and_expire(db: sqlite3.Connection) -> None:
    big = Position("/x.log.2.zst", FileIdentity(2**64 - 5, 2**63 + 7), 12345, b"\x01" * 32, 1024)
    small = Position("/y.log", FileIdentity(64769, 131074), 0, fingerprint(b""), 0)
    save_checkpoint(db, "/x.log", big, 1000.0)
    save_checkpoint(db, "/y.log", small, 5000.0)
    stored = load_checkpoint(db, "/x.log")
    assert stored is not None
    assert (stored.position, stored.updated_at) == (big, 1000.0)
    assert set(load_checkpoints(db)) == {"/x.log", "/y.log"}
    # /x.log is followed: kept however old; /y.log is not, and older than the grace.
    assert expire_checkpoints(db, ["/x.log"], now=5000.0 + 86400, expiry_secs=3600) == ["/y.log"]
    assert set(load_checkpoints(db)) == {"/x.log"}
    assert expire_checkpoints(db, [], now=1000.0 + 10, expiry_secs=3600) == []
    assert delete_checkpoint(db, "/x.log")
    assert load_checkpoints(db) == {}


def test_version_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE checkpoints (source TEXT PRIMARY KEY, path TEXT NOT NULL,
            dev INTEGER NOT NULL, inode INTEGER NOT NULL, offset INTEGER NOT NULL,
            fingerprint BLOB NOT NULL, updated_at REAL NOT NULL);
        INSERT INTO checkpoints VALUES ('/a', '/a', 1, 2, 3, x'00', 4.0);
        """
    )
    conn.commit()
    conn.close()
    upgraded = open_state(path)
    stored = load_checkpoint(upgraded, "/a")
    assert stored is not None and stored.position.fingerprint_bytes == 0
    (version,) = upgraded.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == "2"
    upgraded.close()
