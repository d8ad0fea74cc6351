"""Source stage while running: real renames, compressions, truncations and deletions.

Each test drives a :class:`FileFollower` over real files in a temporary directory,
rotating them the way osquery (``.1``, ``.N.zst``; plugins/logger/logrotate.h), Fleet's
lumberjack (``<name>-<timestamp>[.gz]``) and logrotate ``copytruncate`` do
(docs/design/osquery-interfaces.md §4; docs/design/following-logs.md).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import zstandard
from alerts_support import FakeClock, osquery_rotate

from alert_service.source import (
    FileFollower,
    FileIdentity,
    SourceLine,
    expand_glob,
    is_rotated_name,
    list_siblings,
)
from alert_service.stats import Stats


def append(path: Path | str, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def texts(lines: Iterable[SourceLine]) -> list[bytes]:
    return [line.line for line in lines]


def zst(path: Path | str, data: bytes) -> None:
    Path(path).write_bytes(zstandard.ZstdCompressor().compress(data))


# -- rename rotation -----------------------------------------------------------------


def test_osquery_rotation_reads_old_file_then_new_and_moves_the_position(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"a1\na2\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"a1", b"a2"]
        append(log, b"a3\n")
        osquery_rotate(log)
        append(log, b"b1\n")
        lines = follower.poll()
        assert texts(lines) == [b"a3", b"b1"]
        position = follower.position()
        assert position is not None
        assert position.identity == FileIdentity.of(os.stat(log))
        assert (position.path, position.offset) == (str(log), 3)


def test_two_rotations_between_polls_read_the_file_in_between(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"x1\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"x1"]
        append(log, b"x2\n")
        osquery_rotate(log)  # x → .1
        append(log, b"y1\ny2\n")
        osquery_rotate(log)  # x → .2.zst (the open file is the deleted .1), y → .1
        append(log, b"z1\n")
        assert texts(follower.poll()) == [b"x2", b"y1", b"y2", b"z1"]
        assert stats.rotations == 1
        assert (tmp_path / "osqueryd.results.log.2.zst").exists()
        append(log, b"z2\n")
        assert texts(follower.poll()) == [b"z2"]


def test_three_rotations_between_polls_include_a_compressed_file(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"w1\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"w1"]
        for name in (b"w2", b"x1", b"y1"):
            append(log, name + b"\n")
            osquery_rotate(log)
        append(log, b"z1\n")
        # w is open (now .3.zst's content), x is .2.zst, y is .1, z is live.
        assert texts(follower.poll()) == [b"w2", b"x1", b"y1", b"z1"]


def test_fleet_lumberjack_rotation_with_gzip_backups(tmp_path: Path) -> None:
    log = tmp_path / "osquery_result"
    append(log, b"f1\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"f1"]
        append(log, b"f2\n")
        first = tmp_path / "osquery_result-2025-09-02T07-05-09.000"
        os.rename(log, first)
        append(log, b"g1\n")
        second = tmp_path / "osquery_result-2025-09-02T07-06-10.500"
        os.rename(log, second)
        # lumberjack compresses backups in the background: .gz written, plain removed.
        with open(first, "rb") as src, gzip.open(f"{first}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        first.unlink()
        with open(second, "rb") as src, gzip.open(f"{second}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        second.unlink()
        append(log, b"h1\n")
        assert texts(follower.poll()) == [b"f2", b"g1", b"h1"]


def test_path_missing_between_rename_and_first_write(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"a\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"a"]
        append(log, b"b\n")
        osquery_rotate(log)  # osquery creates the new file on its next write only
        assert texts(follower.poll()) == [b"b"]
        assert follower.poll() == []
        append(log, b"c\n")
        assert texts(follower.poll()) == [b"c"]


# -- truncation and copytruncate -------------------------------------------------------


def test_copytruncate_reads_the_unread_rest_from_the_copy(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a1\na2\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"a1", b"a2"]
        append(log, b"a3\na4\n")  # written, not yet read
        shutil.copyfile(log, tmp_path / "results.log.1")  # logrotate copytruncate
        with open(log, "r+b") as fh:
            fh.truncate(0)
        append(log, b"b1\n")
        assert texts(follower.poll()) == [b"a3", b"a4", b"b1"]
        assert (stats.truncations, stats.possible_data_loss) == (1, 1)


def test_copytruncate_with_regrowth_past_the_offset_is_seen_by_the_head(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"old-1\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"old-1"]
        with open(log, "r+b") as fh:
            fh.truncate(0)
        append(log, b"new-line-1\nnew-line-2\n")  # longer than what was read
        assert texts(follower.poll()) == [b"new-line-1", b"new-line-2"]
        assert stats.truncations == 1


def test_truncation_without_a_copy_restarts_at_zero(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"first line\nsecond line\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert len(follower.poll()) == 2
        with open(log, "r+b") as fh:
            fh.truncate(0)
        assert follower.poll() == []
        append(log, b"x\n")
        lines = follower.poll()
        assert texts(lines) == [b"x"]
        assert lines[0].offset == 2
        assert (stats.truncations, stats.possible_data_loss) == (1, 1)


def test_partial_line_at_a_truncation_is_dropped_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"done\nhalf")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"done"]
        with open(log, "r+b") as fh:
            fh.truncate(0)
        append(log, b"n\n")
        assert texts(follower.poll()) == [b"n"]
        assert stats.partial_lines_dropped == 1


# -- deletion ------------------------------------------------------------------------


def test_deleted_file_is_drained_then_the_recreated_one_read(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a1\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"a1"]
        append(log, b"a2\n")  # not read yet when the file is deleted
        log.unlink()
        append(log, b"b1\n")
        assert texts(follower.poll()) == [b"a2", b"b1"]


def test_deleted_file_not_recreated_is_closed_after_its_tail_is_flushed(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a\nlast-without-newline")
    clock = FakeClock(now=1000.0)
    stats = Stats()
    with FileFollower(
        str(log), start_at="beginning", stats=stats, partial_line_flush_secs=2, clock=clock
    ) as follower:
        assert texts(follower.poll()) == [b"a"]
        log.unlink()
        assert follower.poll() == []
        clock.now += 2.5
        assert texts(follower.poll()) == [b"last-without-newline"]
        assert follower.identity is None  # closed: the deleted inode can be freed
        assert stats.partial_lines_flushed == 1
        append(log, b"new\n")
        assert texts(follower.poll()) == [b"new"]


# -- partial and over-long lines -----------------------------------------------------------


def test_partial_last_line_of_the_live_file_is_never_flushed(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a\nstill-being-writ")
    clock = FakeClock(now=1000.0)
    with FileFollower(
        str(log), start_at="beginning", partial_line_flush_secs=1, clock=clock
    ) as follower:
        assert texts(follower.poll()) == [b"a"]
        clock.now += 3600
        assert follower.poll() == []
        position = follower.position()
        assert position is not None and position.offset == 2  # never inside a line
        append(log, b"ten\n")
        assert texts(follower.poll()) == [b"still-being-written"]


def test_rotated_partial_line_that_gets_its_newline_late_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a\nhal")
    clock = FakeClock(now=1000.0)
    with FileFollower(
        str(log), start_at="beginning", partial_line_flush_secs=5, clock=clock
    ) as follower:
        assert texts(follower.poll()) == [b"a"]
        os.rename(log, tmp_path / "results.log.1")
        append(log, b"next\n")
        assert follower.poll() == []  # the old file is finished first
        clock.now += 1
        append(tmp_path / "results.log.1", b"f\n")  # the writer still had it open
        assert texts(follower.poll()) == [b"half", b"next"]


def test_over_long_line_between_rotations(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    stats = Stats()
    append(log, b"ok-1\n" + b"x" * 5000 + b"\nok-2\n")
    with FileFollower(str(log), start_at="beginning", max_line_bytes=1024, stats=stats) as follower:
        assert texts(follower.poll()) == [b"ok-1", b"ok-2"]
        append(log, b"y" * 3000)  # too long, and never terminated
        osquery_rotate(log)
        append(log, b"ok-3\n")
        assert texts(follower.poll()) == [b"ok-3"]
        assert stats.lines_skipped_too_long == 2
        assert stats.partial_lines_flushed == 0


def test_compressed_backups_of_every_kind_are_read(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"live-0\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"live-0"]
        append(log, b"live-1\n")
        os.rename(log, tmp_path / "results.log.1")
        # logrotate style: .1 compressed to .2.gz before we look
        with open(tmp_path / "results.log.1", "rb") as src:
            data = src.read()
        with gzip.open(tmp_path / "results.log.2.gz", "wb") as dst:
            dst.write(data)
        (tmp_path / "results.log.1").unlink()
        append(log, b"next-0\n")
        assert texts(follower.poll()) == [b"live-1", b"next-0"]


def test_corrupt_compressed_backup_counts_a_possible_loss(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"x1\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"x1"]
        osquery_rotate(log)  # x → .1
        append(log, b"".join(b"y-%s\n" % os.urandom(8).hex().encode() for _ in range(400)))
        osquery_rotate(log)  # x → .2.zst, y → .1
        append(log, b"z1\n")
        osquery_rotate(log)  # x → .3.zst, y → .2.zst, z → .1
        y_zst = Path(f"{log}.2.zst")
        y_zst.write_bytes(y_zst.read_bytes()[:-200])  # cut short: the rest is lost
        append(log, b"w1\n")
        got = texts(follower.poll())
        assert got[-2:] == [b"z1", b"w1"]
        assert all(line.startswith(b"y-") for line in got[:-2])
        assert len(got) - 2 < 400
        assert stats.possible_data_loss == 1


# -- naming --------------------------------------------------------------------------


def test_rotated_names() -> None:
    for name in [
        "osqueryd.results.log.1",
        "osqueryd.results.log.12.zst",
        "osquery_result-2025-09-02T07-05-09.000",
        "osquery_result-2025-09-02T07-05-09.000.gz",
        "results-2025-09-02T07-05-09.000.log",
        "app.log.3.gz",
        "x.zst",
    ]:
        assert is_rotated_name(name), name
    for name in ["osqueryd.results.log", "osquery_result", "results.log", "host-10.log"]:
        assert not is_rotated_name(name), name


def test_siblings_are_listed_oldest_first_plain_preferred(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    zst(f"{log}.3.zst", b"three\n")
    zst(f"{log}.2.zst", b"two-compressed\n")
    Path(f"{log}.2").write_bytes(b"two-plain\n")  # compression in progress
    Path(f"{log}.1").write_bytes(b"one\n")
    Path(f"{log}.9").write_bytes(b"")  # empty: nothing to read
    (tmp_path / "other.log.1").write_bytes(b"not ours\n")
    siblings = list_siblings(str(log))
    try:
        assert [(Path(s.path).name, s.head) for s in siblings] == [
            ("osqueryd.results.log.3.zst", b"three\n"),
            ("osqueryd.results.log.2", b"two-plain\n"),
            ("osqueryd.results.log.1", b"one\n"),
        ]
    finally:
        for sib in siblings:
            sib.file.close()


def test_glob_leaves_out_rotated_files(tmp_path: Path) -> None:
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
        (tmp_path / host / "osquery_result").write_bytes(b"")
        (tmp_path / host / "osquery_result-2025-09-02T07-05-09.000.gz").write_bytes(b"")
    (tmp_path / "c.log").write_bytes(b"")
    (tmp_path / "c.log.1").write_bytes(b"")
    assert expand_glob(str(tmp_path / "*" / "osquery_result*")) == [
        str(tmp_path / "a" / "osquery_result"),
        str(tmp_path / "b" / "osquery_result"),
    ]
    assert expand_glob(str(tmp_path / "c.log*")) == [str(tmp_path / "c.log")]


def test_beginning_without_checkpoint_reads_rotated_generations_oldest_first(
    tmp_path: Path,
) -> None:
    log = tmp_path / "osqueryd.results.log"
    for gen in range(4):  # → .3.zst, .2.zst, .1, live
        append(log, b"gen%d-a\ngen%d-b\n" % (gen, gen))
        if gen < 3:
            osquery_rotate(log)
    zst(f"{log}.4.zst", b"")  # empty: nothing to read
    with FileFollower(str(log), start_at="beginning") as follower:
        first = texts(follower.poll())
        while follower.has_more:
            first += texts(follower.poll())
        position = follower.position()
    assert first == [b"gen%d-%s" % (g, s) for g in range(4) for s in (b"a", b"b")]
    assert position is not None and position.path == str(log)


def test_beginning_skips_a_rotated_copy_of_the_same_content(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"old-1\nold-2\n")
    osquery_rotate(log)
    append(log, b"new-1\n")
    # Mid-rotation: .1 compressed to .2.zst, the plain .1 not yet removed.
    zst(f"{log}.2.zst", (tmp_path / "osqueryd.results.log.1").read_bytes())
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"old-1", b"old-2", b"new-1"]


def test_end_without_checkpoint_still_skips_rotated_generations(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"old\n")
    osquery_rotate(log)
    append(log, b"present\n")
    with FileFollower(str(log), start_at="end") as follower:
        assert follower.poll() == []
        append(log, b"after\n")
        assert texts(follower.poll()) == [b"after"]
