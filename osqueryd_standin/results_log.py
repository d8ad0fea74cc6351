"""Result log lines and files, byte-compatible with osqueryd's filesystem logger.

Part of the osqueryd stand-in (a test double, not osquery).

Line format (upstream osquery 5.23
osquery/core/query.cpp addLegacyFieldsAndDecorations, serializeQueryLogItem,
serializeQueryLogItemAsEvents, osquery/core/sql/row.cpp serializeRow):
compact rapidjson JSON; common fields in the order ``name``,
``hostIdentifier``, ``calendarTime``, ``unixTime``, ``epoch``, ``counter``,
``numerics``, then ``decorations`` when non-empty (or flattened at top level);
column keys sorted; values strings unless ``--logger_numerics``.

* event format (``--logger_event_type=true``, default): one line per row,
  common fields + ``"columns":{...},"action":"removed"|"added"``, removed
  rows first;
* batch format: ``{"diffResults":{"removed":[...],"added":[...]},`` + common;
* snapshots: ``{"snapshot":[...],"action":"snapshot",`` + common, or one
  event line per row with ``"action":"snapshot"`` when
  ``--logger_snapshot_event_type``.

Files (docs/design/osquery-interfaces.md §4; plugins/logger/filesystem_logger.cpp,
plugins/logger/logrotate.h): ``<logger_path>/osqueryd.results.log`` (created
empty at start) and ``osqueryd.snapshots.log``; each line is appended with a
single ``write(2)`` on an O_APPEND descriptor, after a chmod to
``--logger_mode`` (0640). With rotation on, a file at or above
``--logger_rotate_size`` bytes is renamed to ``.1`` before the write, older
ones shift to ``.2.zst``, ``.3.zst``… (zstd, via the ``zstandard`` package;
without it they stay uncompressed and are named ``.2``, ``.3``…), keeping
``--logger_rotate_max_files``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from osqueryd_standin import jsonfmt
from osqueryd_standin.differential import DiffResults
from osqueryd_standin.sqlengine import TypedRow
from osqueryd_standin.values import cast_to_string

__all__ = [
    "RESULTS_FILENAME",
    "SNAPSHOTS_FILENAME",
    "LogFormat",
    "ResultsLogWriter",
    "calendar_time",
    "format_differential",
    "format_snapshot",
]

log = logging.getLogger("osqueryd_standin.results_log")

RESULTS_FILENAME = "osqueryd.results.log"
SNAPSHOTS_FILENAME = "osqueryd.snapshots.log"
_UNCOMPRESSED_COUNT = 1


def calendar_time(unix_time: int) -> str:
    """osqueryd's calendarTime: asctime() of UTC + " UTC" (day space-padded)."""
    return time.asctime(time.gmtime(unix_time)) + " UTC"


@dataclass(frozen=True)
class LogFormat:
    """The flags that shape a result line.

    Attributes:
        host_identifier: ``hostIdentifier``.
        epoch: ``--schedule_epoch``.
        numerics: ``--logger_numerics``: ints and doubles as JSON numbers.
        event_type: ``--logger_event_type`` (differential results).
        snapshot_event_type: ``--logger_snapshot_event_type``.
        decorations: name → value (written only when non-empty).
        decorations_top_level: ``--decorations_top_level``.
    """

    host_identifier: str
    epoch: int = 0
    numerics: bool = False
    event_type: bool = True
    snapshot_event_type: bool = False
    decorations: Mapping[str, str] = field(default_factory=dict)
    decorations_top_level: bool = False


def _sorted_keys(mapping: Mapping[str, object]) -> list[str]:
    return sorted(mapping, key=lambda k: k.encode("utf-8", "surrogateescape"))


def _row_object(row: TypedRow, numerics: bool) -> dict[str, jsonfmt.JsonValue]:
    out: dict[str, jsonfmt.JsonValue] = {}
    for key in _sorted_keys(row):
        value = row[key]
        out[key] = value if numerics else cast_to_string(value)
    return out


def _add_common(
    obj: dict[str, jsonfmt.JsonValue], fmt: LogFormat, name: str, unix_time: int, counter: int
) -> None:
    obj["name"] = name
    obj["hostIdentifier"] = fmt.host_identifier
    obj["calendarTime"] = calendar_time(unix_time)
    obj["unixTime"] = unix_time
    obj["epoch"] = fmt.epoch
    obj["counter"] = counter
    obj["numerics"] = fmt.numerics
    if fmt.decorations:
        decorations: dict[str, jsonfmt.JsonValue] = {
            k: fmt.decorations[k] for k in _sorted_keys(fmt.decorations)
        }
        if fmt.decorations_top_level:
            obj.update(decorations)
        else:
            obj["decorations"] = decorations


def _event_lines(
    fmt: LogFormat,
    name: str,
    unix_time: int,
    counter: int,
    groups: Sequence[tuple[str, Sequence[TypedRow]]],
) -> list[str]:
    lines: list[str] = []
    for action, rows in groups:
        for row in rows:
            obj: dict[str, jsonfmt.JsonValue] = {}
            _add_common(obj, fmt, name, unix_time, counter)
            obj["columns"] = _row_object(row, fmt.numerics)
            obj["action"] = action
            lines.append(jsonfmt.dumps(obj))
    return lines


def format_differential(
    fmt: LogFormat, name: str, unix_time: int, counter: int, diff: DiffResults
) -> list[str]:
    """Lines for one differential result.

    Args:
        fmt: line format flags.
        name: scheduled query name.
        unix_time: seconds since the epoch (also gives calendarTime).
        counter: the differential counter.
        diff: rows removed and added.

    Returns:
        Event format: one line per row, removed first (none when empty).
        Batch format: exactly one line, even with empty lists.
    """
    if fmt.event_type:
        return _event_lines(
            fmt, name, unix_time, counter, (("removed", diff.removed), ("added", diff.added))
        )
    obj: dict[str, jsonfmt.JsonValue] = {
        "diffResults": {
            "removed": [_row_object(r, fmt.numerics) for r in diff.removed],
            "added": [_row_object(r, fmt.numerics) for r in diff.added],
        }
    }
    _add_common(obj, fmt, name, unix_time, counter)
    return [jsonfmt.dumps(obj)]


def format_snapshot(
    fmt: LogFormat, name: str, unix_time: int, rows: Sequence[TypedRow]
) -> list[str]:
    """Lines for one snapshot result (counter always 0).

    Returns:
        One ``{"snapshot":[...],"action":"snapshot",...}`` line, even when
        empty; or with ``snapshot_event_type`` one line per row (none when
        empty).
    """
    if fmt.snapshot_event_type:
        return _event_lines(fmt, name, unix_time, 0, (("snapshot", rows),))
    obj: dict[str, jsonfmt.JsonValue] = {
        "snapshot": [_row_object(r, fmt.numerics) for r in rows],
        "action": "snapshot",
    }
    _add_common(obj, fmt, name, unix_time, 0)
    return [jsonfmt.dumps(obj)]


def _zstd() -> ModuleType | None:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        return None


class _RotatingFile:
    def __init__(
        self, path: Path, mode: int, rotate: bool, rotate_size: int, max_files: int
    ) -> None:
        self.path = path
        self.mode = mode
        self.rotate = rotate
        self.rotate_size = rotate_size
        self.max_files = max_files
        self.lock = threading.Lock()
        self._zstd = _zstd() if rotate else None

    def _rotate_name(self, offset: int) -> Path:
        name = f"{self.path.name}.{offset}"
        if offset > _UNCOMPRESSED_COUNT and self._zstd is not None:
            name += ".zst"
        return self.path.with_name(name)

    def _compress(self, source: Path, dest: Path) -> None:
        assert self._zstd is not None
        data = source.read_bytes()
        # With the log's own mode: a compressed generation holds the same command
        # lines and is never more readable than the live file.
        self._write_all(dest, os.O_TRUNC, self._zstd.ZstdCompressor().compress(data))
        source.unlink()

    def _maybe_rotate(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self.rotate_size:
            return
        offset = 1
        moves = [self._rotate_name(offset)]
        while moves[-1].exists():
            offset += 1
            moves.append(self._rotate_name(offset))
        for i in range(len(moves) - 1, 0, -1):
            if i == _UNCOMPRESSED_COUNT and self._zstd is not None:
                self._compress(moves[i - 1], moves[i])
            else:
                os.replace(moves[i - 1], moves[i])
        for i in range(len(moves) - 1, self.max_files - 1, -1):
            with contextlib.suppress(FileNotFoundError):
                moves[i].unlink()
        os.replace(self.path, moves[0])

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.rotate:
                self._maybe_rotate()
            self._write_all(self.path, os.O_APPEND, data)

    def _write_all(self, path: Path, flags: int, data: bytes) -> None:
        """Write ``data`` to ``path`` (created if missing, ``flags`` added), after a
        chmod to ``--logger_mode``; one ``write(2)`` unless the kernel takes less."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, self.mode)
        try:
            os.fchmod(fd, self.mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            os.close(fd)


class ResultsLogWriter:
    """Appends result and snapshot lines under ``logger_path``.

    Args:
        logger_path: ``--logger_path`` directory (created if missing).
        mode: ``--logger_mode`` as an int, e.g. 0o640.
        rotate: ``--logger_rotate``.
        rotate_size: ``--logger_rotate_size``, bytes.
        rotate_max_files: ``--logger_rotate_max_files``.
    """

    def __init__(
        self,
        logger_path: str | os.PathLike[str],
        mode: int = 0o640,
        rotate: bool = False,
        rotate_size: int = 25 * 1024 * 1024,
        rotate_max_files: int = 25,
    ) -> None:
        self.directory = Path(logger_path)
        self.results = _RotatingFile(
            self.directory / RESULTS_FILENAME, mode, rotate, rotate_size, rotate_max_files
        )
        self.snapshots = _RotatingFile(
            self.directory / SNAPSHOTS_FILENAME, mode, rotate, rotate_size, rotate_max_files
        )

    @property
    def results_path(self) -> Path:
        """Path of ``osqueryd.results.log``."""
        return self.results.path

    @property
    def snapshots_path(self) -> Path:
        """Path of ``osqueryd.snapshots.log``."""
        return self.snapshots.path

    def start(self) -> None:
        """Create the directory and an (empty, if new) results log."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.results.write(b"")

    @staticmethod
    def _encode(line: str) -> bytes:
        return (line + "\n").encode("utf-8", "surrogateescape")

    def write_results(self, lines: Sequence[str]) -> None:
        """Append lines to the results log, one write per line."""
        for line in lines:
            self.results.write(self._encode(line))

    def write_snapshots(self, lines: Sequence[str]) -> None:
        """Append lines to the snapshots log, one write per line."""
        for line in lines:
            self.snapshots.write(self._encode(line))
