"""Source stage: following real files (append, partial lines, rotation, truncation)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alert_service.errors import SourceError
from alert_service.source import (
    FileFollower,
    FileIdentity,
    LineSplitter,
    SourceLine,
    read_whole_file,
)
from alert_service.stats import Stats


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def texts(lines: Iterable[SourceLine]) -> list[bytes]:
    return [line.line for line in lines]


def test_reads_lines_appended_over_time(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"one\ntwo\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        first = follower.poll()
        assert texts(first) == [b"one", b"two"]
        assert [line.offset for line in first] == [4, 8]
        assert follower.poll() == []
        append(log, b"three\n")
        third = follower.poll()
        assert texts(third) == [b"three"]
        assert third[0].offset == 14
        assert third[0].identity == FileIdentity.of(os.stat(log))
        assert third[0].path == str(log)


def test_partial_line_is_held_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert follower.poll() == []
        append(log, b'{"name":"q","host')
        assert follower.poll() == []
        append(log, b'Identifier":"h"}\nnext-par')
        done = follower.poll()
        assert texts(done) == [b'{"name":"q","hostIdentifier":"h"}']
        append(log, b"t\n")
        assert texts(follower.poll()) == [b"next-part"]


def test_rename_rotation_reads_old_file_to_eof_then_new_file(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    append(log, b"a1\na2\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert texts(follower.poll()) == [b"a1", b"a2"]
        old_identity = follower.identity
        append(log, b"a3\n")  # written before the rotation, not yet read
        os.rename(log, tmp_path / "osqueryd.results.log.1")
        append(log, b"b1\nb2\n")  # the new file at the same path
        append(tmp_path / "osqueryd.results.log.1", b"a4\n")  # late write to the old file
        lines = follower.poll()
        assert texts(lines) == [b"a3", b"a4", b"b1", b"b2"]
        assert {line.identity for line in lines[:2]} == {old_identity}
        assert lines[2].identity == FileIdentity.of(os.stat(log))
        assert lines[2].identity != old_identity
        assert [line.offset for line in lines] == [9, 12, 3, 6]
        assert stats.rotations == 1
        append(log, b"b3\n")
        assert texts(follower.poll()) == [b"b3"]


def test_rotation_while_path_is_missing_for_a_while(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"x1\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"x1"]
        append(log, b"x2\n")
        os.rename(log, tmp_path / "results.log.1")
        assert texts(follower.poll()) == [b"x2"]  # path gone: keep reading the open file
        assert follower.poll() == []
        append(log, b"y1\n")
        assert texts(follower.poll()) == [b"y1"]


def test_truncation_restarts_at_zero_and_is_counted(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"first line\nsecond line\n")
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", stats=stats) as follower:
        assert len(follower.poll()) == 2
        with open(log, "wb") as fh:  # truncate in place (same inode), shorter content
            fh.write(b"new\n")
        lines = follower.poll()
        assert texts(lines) == [b"new"]
        assert lines[0].offset == 4
        assert stats.truncations == 1


def test_missing_file_is_waited_for_and_then_read_from_start(tmp_path: Path) -> None:
    log = tmp_path / "later.log"
    with FileFollower(str(log), start_at="end") as follower:
        assert follower.poll() == []
        assert follower.identity is None
        append(log, b"created-1\ncreated-2\n")
        # A file that appears after start is read whole even with start_at=end.
        assert texts(follower.poll()) == [b"created-1", b"created-2"]


def test_start_at_end_skips_existing_lines_and_a_partial_tail(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"old-1\nold-2\nhalf-writ")
    with FileFollower(str(log), start_at="end") as follower:
        assert follower.poll() == []
        append(log, b"ten\nnew-1\n")
        assert texts(follower.poll()) == [b"new-1"]


def test_start_at_end_at_a_line_boundary_reads_the_next_line(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"old\n")
    with FileFollower(str(log), start_at="end") as follower:
        assert follower.poll() == []
        append(log, b"new\n")
        assert texts(follower.poll()) == [b"new"]


def test_over_long_line_is_skipped_and_the_next_line_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "results.log"
    append(log, b"short\n" + b"x" * 40)
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", max_line_bytes=16, stats=stats) as follower:
        with caplog.at_level(logging.WARNING, logger="alert_service"):
            assert texts(follower.poll()) == [b"short"]
        assert stats.lines_skipped_too_long == 1
        assert "source_line_too_long" in caplog.text
        append(log, b"y" * 40 + b"\n" + b"exactly-16-bytes\nafter\n")
        assert texts(follower.poll()) == [b"exactly-16-bytes", b"after"]
        assert stats.lines_skipped_too_long == 1


def test_deleted_and_recreated_file(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a\n")
    with FileFollower(str(log), start_at="beginning") as follower:
        assert texts(follower.poll()) == [b"a"]
        log.unlink()
        assert follower.poll() == []
        append(log, b"b\n")
        assert texts(follower.poll()) == [b"b"]


def test_partial_line_of_a_rotated_file_is_flushed_after_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"a\nunfinished")
    stats = Stats()
    now = [100.0]
    with FileFollower(
        str(log),
        start_at="beginning",
        stats=stats,
        partial_line_flush_secs=5.0,
        clock=lambda: now[0],
    ) as follower:
        assert texts(follower.poll()) == [b"a"]
        os.rename(log, tmp_path / "results.log.1")
        append(log, b"b\n")
        # The old file is not finished yet: its last line may still get its newline.
        assert follower.poll() == []
        now[0] += 4.9
        assert follower.poll() == []
        now[0] += 0.2
        lines = follower.poll()
        assert texts(lines) == [b"unfinished", b"b"]
        assert lines[0].offset == len(b"a\nunfinished")
        assert stats.partial_lines_flushed == 1
        assert stats.partial_lines_dropped == 0


def test_read_budget_per_poll_sets_has_more(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    append(log, b"".join(b"line-%06d\n" % i for i in range(20000)))
    with FileFollower(str(log), start_at="beginning", max_read_bytes_per_poll=65536) as follower:
        got: list[bytes] = []
        polls = 0
        while True:
            got += texts(follower.poll())
            polls += 1
            if not follower.has_more:
                break
        assert polls > 1
        assert len(got) == 20000
        assert got[-1] == b"line-019999"


def test_read_whole_file_includes_an_unterminated_last_line(tmp_path: Path) -> None:
    log = tmp_path / "old.log"
    append(log, b"one\n" + b"z" * 50 + b"\ntwo\nthree")
    stats = Stats()
    lines = list(read_whole_file(str(log), max_line_bytes=16, stats=stats))
    assert texts(lines) == [b"one", b"two", b"three"]
    assert lines[-1].offset == log.stat().st_size
    assert stats.lines_skipped_too_long == 1


def test_read_whole_file_missing_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        list(read_whole_file(str(tmp_path / "absent.log")))


@given(
    lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_splitter_output_does_not_depend_on_chunking(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    splitter = LineSplitter(max_line_bytes=20)
    got: list[tuple[bytes, int]] = []
    start = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        got += splitter.feed(data[start:cut])
        start = max(start, cut)
    expected: list[tuple[bytes, int]] = []
    offset = 0
    for line in lines:
        offset += len(line) + 1
        if len(line) <= 20:
            expected.append((line, offset))
    assert got == expected
