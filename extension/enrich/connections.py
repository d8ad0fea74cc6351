"""Connection tracker: one stable row per connection, from connect to close.

Each sample's socket list is merged into a table of connections:

- **Identity.** A socket with an inode (Linux) is identified by (network
  namespace, inode), so two successive connections on the same pid and
  5-tuple (port reuse) are two rows. Without an inode (macOS, Windows) the
  key is (pid, family, protocol, local and remote address and port); a key
  that disappears and comes back is a new connection with a new first_seen.
- **Stable columns.** Owner, process details, direction and Community ID are
  fixed when a connection is first served to osqueryd; later state changes,
  TIME_WAIT (which drops the owner and the inode on Linux) or a failed owner
  lookup do not change them. So a differential query logs exactly one
  ``added`` and one ``removed`` per connection.
- **Close and TIME_WAIT.** A connection ends when its socket (its inode, or
  its owner and 5-tuple) is gone: that is when the process closed it. The
  ownerless TIME_WAIT remnant the kernel keeps for up to 60 s is recognised
  by its 5-tuple and is not a new connection. An ownerless socket with no
  known connection (it closed before any sample saw it, or before the
  extension started) is a row of its own with no process columns: the remote
  end is still worth showing.
- **Linger.** A connection that disappeared stays ``linger_secs`` seconds, so
  a differential query every 2 s still sees a connection that lived for a
  single sample. At most ``max_lingering`` closed connections are kept
  (oldest dropped first), which bounds memory whatever the churn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from extension.enrich.flow import community_id, direction_of, listening_endpoints
from extension.model import ProcessInfo, SocketRecord

__all__ = ["ConnectionTracker", "Row", "TrackedConnection"]

Row = dict[str, str]
TOMBSTONE_SECS: Final = 120.0
"""Seconds a closed connection's 5-tuple is remembered (Linux TIME_WAIT lasts 60 s)."""
_Key = tuple[object, ...]
_Tuple5 = tuple[int | None, int, int, str, int, str, int]


def _key(record: SocketRecord) -> _Key:
    if record.socket:
        return ("inode", record.net_namespace, record.socket)
    return ("tuple", record.pid, *_tuple5(record))


def _tuple5(record: SocketRecord) -> _Tuple5:
    """(net_namespace, family, protocol, local address and port, remote address and port)."""
    return (
        record.net_namespace,
        record.family,
        record.protocol,
        record.local_address,
        record.local_port,
        record.remote_address,
        record.remote_port,
    )


def _ownerless(record: SocketRecord) -> bool:
    return record.pid is None and not record.socket


@dataclass(slots=True)
class TrackedConnection:
    """One connection in the table.

    Attributes:
        record: the socket as first seen; its fields other than ``state`` are
            what the row shows.
        process: owner details, fixed once the row has been served.
        direction: 'inbound', 'outbound', 'listening' or ''.
        first_seen: seconds since the Unix epoch.
        last_seen: seconds since the Unix epoch.
        state: latest TCP state ('' for UDP).
        closed_at: seconds since the Unix epoch when it disappeared, or None.
        served: True once a row for it has gone to osqueryd.
    """

    record: SocketRecord
    process: ProcessInfo
    direction: str
    first_seen: int
    last_seen: int
    state: str
    closed_at: float | None = None
    served: bool = False
    _stable_row: Row | None = None

    def row(self) -> Row:
        """The table row: ``dict[str, str]`` keyed by column name, unknowns left out.

        The stable columns are rendered once and reused on later calls.
        """
        if self._stable_row is None:
            self._stable_row = self._render_stable()
        row = dict(self._stable_row)
        if self.state:
            row["state"] = self.state
        row["last_seen"] = str(self.last_seen)
        return row

    def _render_stable(self) -> Row:
        record, process = self.record, self.process
        values: dict[str, int | str | None] = {
            "pid": record.pid,
            "family": record.family,
            "protocol": record.protocol,
            "local_address": record.local_address,
            "local_port": record.local_port,
            "remote_address": record.remote_address,
            "remote_port": record.remote_port,
            "state": "",
            "socket": record.socket or None,
            "net_namespace": record.net_namespace,
            "direction": self.direction,
            "community_id": community_id(record),
            "name": process.name,
            "path": process.path,
            "cmdline": process.cmdline,
            "uid": process.uid,
            "username": process.username,
            "parent": process.parent,
            "parent_name": process.parent_name,
            "parent_path": process.parent_path,
            "start_time": process.start_time,
            "first_seen": self.first_seen,
        }
        return {k: str(v) for k, v in values.items() if v is not None}


class ConnectionTracker:
    """Merges samples into the connection table (not thread-safe; the sampler locks).

    Args:
        lookup: pid -> ProcessInfo (see ProcessTracker.lookup); called once per
            new connection, never for a connection already served.
        linger_secs: seconds a closed connection stays in the table.
        max_lingering: cap on closed connections kept, oldest dropped first.
    """

    def __init__(
        self,
        lookup: Callable[[int | None], ProcessInfo],
        linger_secs: float = 6.0,
        max_lingering: int = 50_000,
    ) -> None:
        self._lookup = lookup
        self.linger_secs = linger_secs
        self.max_lingering = max_lingering
        self._connections: dict[_Key, TrackedConnection] = {}
        # 5-tuples of closed connections: their ownerless TIME_WAIT remnants are
        # not new connections. Kept TOMBSTONE_SECS seconds, at most max_lingering.
        self._tombstones: OrderedDict[_Tuple5, float] = OrderedDict()
        self.evicted = 0

    @property
    def tracked(self) -> int:
        """Connections in the table, open or lingering."""
        return len(self._connections)

    @property
    def lingering(self) -> int:
        """Closed connections still in the table."""
        return sum(1 for c in self._connections.values() if c.closed_at is not None)

    def update(self, records: Iterable[SocketRecord], now: float) -> None:
        """Merge one sample.

        Args:
            records: every socket of the sample (a complete list).
            now: the sample's time, seconds since the Unix epoch.
        """
        records = list(records)
        second = int(now)
        current: dict[_Key, SocketRecord] = {}
        for record in records:
            current.setdefault(_key(record), record)

        for key, conn in self._connections.items():
            if conn.closed_at is not None:
                continue
            seen = current.pop(key, None)
            if seen is None:
                conn.closed_at = now
                if not _ownerless(conn.record):
                    self._tombstones[_tuple5(conn.record)] = now
                    self._tombstones.move_to_end(_tuple5(conn.record))
                continue
            conn.last_seen = second
            conn.state = seen.state
            if not conn.served and conn.record.pid is None and seen.pid is not None:
                # The owner became known before osqueryd saw the row.
                conn.record = seen
                conn.process = self._lookup(seen.pid)

        listeners: frozenset[tuple[int, int, str]] | None = None
        for key, record in current.items():
            if _ownerless(record):
                tuple5 = _tuple5(record)
                if tuple5 in self._tombstones:
                    # The TIME_WAIT (or other ownerless) remnant of a connection
                    # that has already been shown and closed.
                    continue
            if listeners is None:
                listeners = listening_endpoints(records)
            old = self._connections.pop(key, None)
            if old is not None:
                # Same key again while the old one lingers: both stay, as two rows.
                self._connections[(*key, "closed", old.first_seen, id(old))] = old
            self._connections[key] = TrackedConnection(
                record=record,
                process=self._lookup(record.pid),
                direction=direction_of(record, listeners),
                first_seen=second,
                last_seen=second,
                state=record.state,
            )
        self._expire(now)

    def rows(self) -> list[Row]:
        """Every connection in the table, open or lingering, as rows.

        Returns:
            list of rows, each ``dict[str, str]`` keyed by column name.
        """
        rows = []
        for conn in self._connections.values():
            conn.served = True
            rows.append(conn.row())
        return rows

    def _expire(self, now: float) -> None:
        tomb_limit = now - TOMBSTONE_SECS
        while self._tombstones:
            tuple5, at = next(iter(self._tombstones.items()))
            if at >= tomb_limit and len(self._tombstones) <= self.max_lingering:
                break
            del self._tombstones[tuple5]
        limit = now - self.linger_secs
        closed = [(c.closed_at, k) for k, c in self._connections.items() if c.closed_at is not None]
        survivors: list[tuple[float, _Key]] = []
        for at, key in closed:
            if at is not None and at < limit:
                del self._connections[key]
            elif at is not None:
                survivors.append((at, key))
        excess = len(survivors) - self.max_lingering
        if excess > 0:
            survivors.sort(key=lambda item: item[0])
            for _, key in survivors[:excess]:
                del self._connections[key]
            self.evicted += excess
