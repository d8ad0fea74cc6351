"""Unit tests: differential results, counters and result-log lines/files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import zstandard
from standin_helpers import FIXED_TIME

from osqueryd_standin.differential import DiffResults, DiffStore, diff_rows
from osqueryd_standin.results_log import (
    LogFormat,
    ResultsLogWriter,
    calendar_time,
    format_differential,
    format_snapshot,
)
from osqueryd_standin.sqlengine import TypedRow

CAL = "Tue Sep  2 07:05:09 2025 UTC"
COMMON = (
    '"name":"pack_netmon_tracked","hostIdentifier":"web-01","calendarTime":"'
    + CAL
    + '","unixTime":1756796709,"epoch":0'
)


def test_calendar_time_is_asctime_utc() -> None:
    assert calendar_time(FIXED_TIME) == CAL


def test_event_line_matches_reference_example() -> None:
    fmt = LogFormat(host_identifier="web-01")
    diff = DiffResults(added=[{"pid": "812", "local_port": "443"}])
    lines = format_differential(fmt, "pack_netmon_tracked", FIXED_TIME, 3, diff)
    assert lines == [
        "{" + COMMON + ',"counter":3,"numerics":false,'
        '"columns":{"local_port":"443","pid":"812"},"action":"added"}'
    ]


def test_event_lines_removed_first() -> None:
    fmt = LogFormat(host_identifier="web-01")
    diff = DiffResults(added=[{"a": "new"}], removed=[{"a": "old"}])
    lines = format_differential(fmt, "pack_netmon_tracked", FIXED_TIME, 1, diff)
    assert [line.rsplit('"action":', 1)[1] for line in lines] == ['"removed"}', '"added"}']
    assert format_differential(fmt, "n", FIXED_TIME, 0, DiffResults()) == []


def test_batch_line() -> None:
    fmt = LogFormat(host_identifier="web-01", event_type=False)
    diff = DiffResults(added=[{"b": "2", "a": "1"}], removed=[{"a": "0", "b": "9"}])
    (line,) = format_differential(fmt, "pack_netmon_tracked", FIXED_TIME, 4, diff)
    assert line == (
        '{"diffResults":{"removed":[{"a":"0","b":"9"}],"added":[{"a":"1","b":"2"}]},'
        + COMMON
        + ',"counter":4,"numerics":false}'
    )
    (empty,) = format_differential(fmt, "pack_netmon_tracked", FIXED_TIME, 0, DiffResults())
    assert empty.startswith('{"diffResults":{"removed":[],"added":[]},"name":')


def test_decorations_numerics_and_escapes() -> None:
    fmt = LogFormat(
        host_identifier="web-01", numerics=True, decorations={"z": "1", "host_uuid": "u"}
    )
    diff = DiffResults(added=[{"n": 5, "d": 1.0, "s": "a\x01\u00e9"}])
    (line,) = format_differential(fmt, "pack_netmon_tracked", FIXED_TIME, 0, diff)
    assert line == (
        "{" + COMMON + ',"counter":0,"numerics":true,"decorations":{"host_uuid":"u","z":"1"},'
        '"columns":{"d":1.0,"n":5,"s":"a\\u0001\u00e9"},"action":"added"}'
    )
    top = LogFormat(host_identifier="h", decorations={"k": "v"}, decorations_top_level=True)
    (line,) = format_differential(top, "n", FIXED_TIME, 0, DiffResults(added=[{"a": 1}]))
    assert ',"numerics":false,"k":"v","columns":{"a":"1"},' in line


def test_snapshot_lines() -> None:
    fmt = LogFormat(host_identifier="web-01")
    (line,) = format_snapshot(fmt, "pack_netmon_tracked", FIXED_TIME, [{"a": "x\ny"}])
    assert line == (
        '{"snapshot":[{"a":"x\\ny"}],"action":"snapshot",' + COMMON + ',"counter":0,'
        '"numerics":false}'
    )
    events = LogFormat(host_identifier="web-01", snapshot_event_type=True)
    (line,) = format_snapshot(events, "pack_netmon_tracked", FIXED_TIME, [{"a": "1"}])
    assert line.endswith('"columns":{"a":"1"},"action":"snapshot"}')


def test_diff_is_a_multiset_difference() -> None:
    previous: list[TypedRow] = [{"x": "a"}, {"x": "a"}, {"x": "b"}, {"x": "d"}]
    current: list[TypedRow] = [{"x": "c"}, {"x": "b"}, {"x": "a"}, {"x": "e"}]
    result = diff_rows(previous, current)
    assert result.added == [{"x": "c"}, {"x": "e"}]
    assert result.removed == [{"x": "a"}, {"x": "d"}]


def test_removed_rows_are_sorted_like_std_multiset() -> None:
    previous: list[TypedRow] = [{"x": "b"}, {"x": 2.0}, {"x": "a"}, {"x": 10}, {"w": "z"}]
    result = diff_rows(previous, [])
    assert result.removed == [{"w": "z"}, {"x": 10}, {"x": 2.0}, {"x": "a"}, {"x": "b"}]


def test_counters(tmp_path: Path) -> None:
    store = DiffStore(tmp_path / "db")
    rows: list[TypedRow] = [{"a": "1"}]
    diff, counter = store.add_new_results("q", rows, 0)
    assert (counter, diff.added) == (0, rows)
    assert store.add_new_results("q", rows, 0)[1] is None
    changed: list[TypedRow] = [{"a": "2"}]
    diff, counter = store.add_new_results("q", changed, 0)
    assert counter == 1
    assert (diff.added, diff.removed) == ([{"a": "2"}], [{"a": "1"}])
    # A restart with the same database continues the counter.
    again = DiffStore(tmp_path / "db")
    third: list[TypedRow] = [{"a": "3"}]
    assert again.add_new_results("q", third, 0)[1] == 2
    # A new epoch is a first run again.
    assert again.add_new_results("q", third, 7)[1] == 0
    # Without a database (ephemeral) every start is a first run.
    assert DiffStore(None).add_new_results("q", rows, 0)[1] == 0


def test_writer_creates_log_with_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        writer = ResultsLogWriter(tmp_path / "logs")
        writer.start()
    finally:
        os.umask(old)
    assert writer.results_path.read_bytes() == b""
    assert stat.S_IMODE(writer.results_path.stat().st_mode) == 0o640
    writer.write_results(['{"a":"\u00e9"}', "{}"])
    assert writer.results_path.read_bytes() == '{"a":"\u00e9"}\n{}\n'.encode()


def test_rotation(tmp_path: Path) -> None:
    writer = ResultsLogWriter(tmp_path, rotate=True, rotate_size=10, rotate_max_files=3)
    writer.start()
    for i in range(5):
        writer.write_results([f"line-{i}-xxxxx"])
    log = writer.results_path
    assert log.read_text() == "line-4-xxxxx\n"
    assert Path(f"{log}.1").read_text() == "line-3-xxxxx\n"
    older = zstandard.ZstdDecompressor().decompress(
        Path(f"{log}.2.zst").read_bytes(), max_output_size=1 << 20
    )
    assert older == b"line-2-xxxxx\n"
    # logger_rotate_max_files rotated files are kept: .1, .2.zst, .3.zst.
    assert Path(f"{log}.3.zst").exists()
    assert not Path(f"{log}.4.zst").exists()


def test_rotated_files_keep_the_logger_mode(tmp_path: Path) -> None:
    """Rotated and compressed logs hold the same command lines as the live one: they are
    never more readable than ``--logger_mode``, whatever the umask."""
    old = os.umask(0o022)
    try:
        writer = ResultsLogWriter(tmp_path, rotate=True, rotate_size=10, rotate_max_files=3)
        writer.start()
        for i in range(5):
            writer.write_results([f"line-{i}-xxxxx"])
    finally:
        os.umask(old)
    log = writer.results_path
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in (log, Path(f"{log}.1"), Path(f"{log}.2.zst"), Path(f"{log}.3.zst"))
    }
    assert modes == dict.fromkeys(modes, 0o640)
