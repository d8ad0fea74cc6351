"""The ``tracked_connections`` table: rows and routes.

Row format on the wire: list of rows, each ``dict[str, str]`` keyed by column
name (extension/columns.py). An unknown value is left out of the row, which
osqueryd reads as NULL (osquery-protocol-and-logs.md §3, "Rows back into
SQLite"; osquery/sql/dynamic_table_row.cpp).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from extension.collect import Collector, PsutilCollector
from extension.columns import COLUMNS
from extension.enrich import ProcessTracker, community_id, direction_of, listening_endpoints
from extension.model import ProcessInfo, SocketRecord

__all__ = ["TABLE_NAME", "Row", "TrackedConnectionsTable", "routes"]

TABLE_NAME = "tracked_connections"
Row = dict[str, str]

# What identifies one connection across samples: pid and the 5-tuple plus the
# namespace and socket inode where the OS has them.
_Key = tuple[int | None, int, int, str, int, str, int, int | None, int | None]


def routes() -> list[dict[str, str]]:
    """The route list osqueryd receives for ``{"action": "columns"}``.

    Returns:
        one ``{"id": "column", "name", "type", "op": "0"}`` map per column, in
        contract order (osquery-protocol-and-logs.md §3; osquery/core/tables.cpp).
    """
    return [{"id": "column", "name": c.name, "type": c.type, "op": "0"} for c in COLUMNS]


def _key(record: SocketRecord) -> _Key:
    return (
        record.pid,
        record.family,
        record.protocol,
        record.local_address,
        record.local_port,
        record.remote_address,
        record.remote_port,
        record.net_namespace,
        record.socket,
    )


def _put(row: Row, column: str, value: int | str | None) -> None:
    if value is not None:
        row[column] = str(value)


class TrackedConnectionsTable:
    """Produces the table's rows from a collector and a process tracker.

    Thread-safe: osqueryd may call ``generate`` on several connections at once.

    Args:
        collector: where sockets come from; psutil by default.
        tracker: process lookups; a fresh :class:`ProcessTracker` by default.
        clock: returns seconds since the Unix epoch (injectable for tests).
    """

    def __init__(
        self,
        collector: Collector | None = None,
        tracker: ProcessTracker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._collector = collector or PsutilCollector()
        self._tracker = tracker or ProcessTracker()
        self._clock = clock
        self._lock = threading.Lock()
        self._first_seen: dict[_Key, int] = {}

    def generate(self) -> list[Row]:
        """Sample the host and return the table.

        Returns:
            list of rows, each ``dict[str, str]`` keyed by column name.

        Raises:
            extension.collect.CollectError: the socket list could not be read;
                the caller turns it into an error status for osqueryd, never an
                empty table.
        """
        with self._lock:
            records = self._collector.collect()
            now = int(self._clock())
            listeners = listening_endpoints(records)
            first_seen: dict[_Key, int] = {}
            rows: list[Row] = []
            for record in records:
                key = _key(record)
                first = first_seen.setdefault(key, self._first_seen.get(key, now))
                process = self._tracker.lookup(record.pid)
                rows.append(self._row(record, process, direction_of(record, listeners), first, now))
            self._first_seen = first_seen
            self._tracker.forget_except({r.pid for r in records if r.pid is not None})
            return rows

    @staticmethod
    def _row(
        record: SocketRecord, process: ProcessInfo, direction: str, first_seen: int, now: int
    ) -> Row:
        row: Row = {}
        _put(row, "pid", record.pid)
        _put(row, "family", record.family)
        _put(row, "protocol", record.protocol)
        _put(row, "local_address", record.local_address)
        _put(row, "local_port", record.local_port)
        _put(row, "remote_address", record.remote_address)
        _put(row, "remote_port", record.remote_port)
        _put(row, "state", record.state)
        _put(row, "socket", record.socket)
        _put(row, "net_namespace", record.net_namespace)
        _put(row, "direction", direction)
        _put(row, "community_id", community_id(record))
        _put(row, "name", process.name)
        _put(row, "path", process.path)
        _put(row, "cmdline", process.cmdline)
        _put(row, "uid", process.uid)
        _put(row, "username", process.username)
        _put(row, "parent", process.parent)
        _put(row, "parent_name", process.parent_name)
        _put(row, "parent_path", process.parent_path)
        _put(row, "start_time", process.start_time)
        _put(row, "first_seen", first_seen)
        _put(row, "last_seen", now)
        return row
