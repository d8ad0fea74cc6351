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
- **TIME_WAIT.** A socket without owner and inode whose 5-tuple belongs to a
  known connection continues that connection. One with no known connection
  (it closed before any sample saw it, or before the extension started) is a
  row of its own with no process columns: the remote end is still worth
  showing.
- **Linger.** A connection that disappeared stays ``linger_secs`` seconds, so
  a differential query every 2 s still sees a connection that lived for a
  single sample. At most ``max_lingering`` closed connections are kept
  (oldest dropped first), which bounds memory whatever the churn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from extension.enrich.flow import community_id, direction_of, listening_endpoints
from extension.model import ProcessInfo, SocketRecord

__all__ = ["ConnectionTracker", "Row", "TrackedConnection"]

Row = dict[str, str]
_Key = tuple[object, ...]
_Tuple5 = tuple[int | None, int, int, str, int, str, int]


def _key(record: SocketRecord) -> _Key:
    if record.socket:
        return ("inode", record.net_namespace, record.socket)
    return (
        "tuple",
        record.pid,
        record.net_namespace,
        record.family,
        record.protocol,
        record.local_address,
        record.local_port,
        record.remote_address,
        record.remote_port,
    )


def _tuple5(record: SocketRecord) -> _Tuple5:
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
        owned: dict[_Key, SocketRecord] = {}
        ownerless: dict[_Tuple5, SocketRecord] = {}
        for record in records:
            if _ownerless(record):
                ownerless.setdefault(_tuple5(record), record)
            else:
                owned.setdefault(_key(record), record)

        for key, conn in self._connections.items():
            current = owned.pop(key, None) if conn.closed_at is None else None
            if current is None:
                current = ownerless.pop(_tuple5(conn.record), None)
            if current is None:
                if conn.closed_at is None:
                    conn.closed_at = now
                continue
            conn.closed_at = None
            conn.last_seen = second
            conn.state = current.state
            if not conn.served and conn.record.pid is None and current.pid is not None:
                # The owner became known before osqueryd saw the row.
                conn.record = current
                conn.process = self._lookup(current.pid)

        new_records = list(owned.values()) + list(ownerless.values())
        if new_records:
            listeners = listening_endpoints(records)
            for record in new_records:
                key = _key(record)
                old = self._connections.pop(key, None)
                if old is not None:
                    if old.closed_at is None:
                        self._connections[key] = old
                        continue
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
