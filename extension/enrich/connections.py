"""Connection tracker: one stable row per connection, from connect to close.

Two sources feed it: samples of the host's sockets (:meth:`update`) and,
where the kernel event source runs, flow events (:meth:`observe`).

- **Identity.** A socket with an inode (Linux) is identified by (network
  namespace, inode), so two successive connections on the same pid and
  5-tuple (port reuse) are two rows. Without an inode (macOS, Windows) the
  key is (pid, family, protocol, local and remote address and port); a key
  that disappears and comes back is a new connection with a new first_seen.
  A flow event without an inode is keyed by the event source's own key
  until a sample sees its socket (same namespace and 5-tuple): the row then
  takes the socket's key and the sampler follows it from there.
- **Stable columns.** Owner, process details, direction, status and
  Community ID are fixed when a connection is first served to osqueryd;
  later state changes, TIME_WAIT (which drops the owner and the inode on
  Linux) or a failed owner lookup do not change them. So a differential query
  logs exactly one ``added`` and one ``removed`` per connection.
- **Held rows.** A row is first served only once what its stable columns say
  is settled: a connection attempt (SYN_SENT) waits for its outcome for up to
  ``attempt_grace_secs`` (then its status is ``timed_out``); a flow event with
  no inode that is still open waits for the next sample, which finds its
  socket (and inode) or finds it closed; and where kernel events run, a
  socket a sample found waits until the events up to that sample are merged
  (tens of milliseconds), since they say who opened it.
- **Close and TIME_WAIT.** A connection ends on evidence, whichever comes
  first: the kernel reports it closed; a sample lists its socket's ownerless
  remnant (TIME_WAIT, or an orphan still closing); or two samples in a row
  leave its socket (its inode, or its owner and 5-tuple) out, since one
  listing may skip a socket that moves in the kernel's hash tables meanwhile
  (it then closed at the first). The ownerless TIME_WAIT remnant the kernel
  keeps for up to 60 s is recognised by its 5-tuple and is not a new
  connection. An ownerless socket with no known connection (it closed before
  any sample saw it, or before the extension started) is a row of its own
  with no process columns: the remote end is still worth showing.
- **Inbound owners.** The kernel reports an accepted connection in softirq
  context, with no task: its owner is the owner of the listening socket on
  its port (in its namespace when known). When several processes listen on
  that port, the task the kernel saw closing the socket decides; otherwise
  the owner stays unknown rather than guessed.
- **Restarts.** :meth:`saved_rows` gives the served rows for saving, and
  :meth:`restore` takes them back in a new process: a connection the first
  sample finds again (same socket key and addresses) gets the very row it
  had, closed rows linger on, so a restart of the extension or of osqueryd
  logs no change at all for connections that lived through it.
- **Linger.** A connection that disappeared stays ``linger_secs`` seconds, and
  in any case until it has been served once, so a differential query every
  2 s still sees a connection that lived for a single sample, even when a
  query runs late; a closed row not shown yet waits aside for a query,
  without holding back the rows that closed after it. At most
  ``max_lingering`` closed connections are kept (oldest dropped first),
  which bounds memory whatever the churn.
- **One flow, one socket.** A flow event is linked to an open row by its
  5-tuple only when nothing says the row is another socket (another inode,
  another flow of the event source, or, for UDP, another owner); an
  event-only row whose 5-tuple another flow takes has closed.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from extension.columns import MAX_TEXT, STABLE_COLUMNS, cap_text
from extension.enrich.arena import Chunk, RowArena, maps_of
from extension.enrich.flow import (
    Holders,
    Listeners,
    community_id,
    direction_of,
    endpoint_of,
    is_listening,
)
from extension.enrich.names import NameCache
from extension.enrich.saved import SavedRow
from extension.enrich.wire import (
    GroupedRows,
    RowGroup,
    Segment,
    decode_rows,
    encode_pairs,
    map_header,
    tail_bytes,
)
from extension.model import IPPROTO_TCP, IPPROTO_UDP, FlowEvent, ProcessInfo, SocketRecord

__all__ = [
    "DEFAULT_ATTEMPT_GRACE_SECS",
    "EARLIER_FLOW_KEYS",
    "ConnectionTracker",
    "Row",
    "TrackedConnection",
]

Row = dict[str, str]
TOMBSTONE_SECS: Final = 120.0
"""Seconds a closed connection's 5-tuple is remembered (Linux TIME_WAIT lasts 60 s)."""
DEFAULT_ATTEMPT_GRACE_SECS: Final = 3.0
"""Seconds a connection attempt's row waits for the outcome before it is
served as ``timed_out``: the kernel resends an unanswered SYN after 1 s and
3 s (RFC 6298's initial 1 s retransmission timeout, doubled)."""
UNSERVED_LINGER_SECS: Final = 60.0
"""Seconds a closed connection no query has shown yet is kept for one."""
_UDP_SENDER_SECS: Final = 60.0
EVENTS_WAIT_SECS: Final = 2.0
"""Seconds at most a row a sample found waits for the kernel events that say
who opened it (they normally come within tens of milliseconds); a stalled
event reader holds no row longer."""
_Key = tuple[object, ...]
_Tuple5 = tuple[int | None, int, int, str, int, str, int]
_Addr = tuple[int, int, str, int, str, int]
_WILDCARDS: Final = frozenset({"0.0.0.0", "::", ""})
_REMNANT_STATES: Final = frozenset({"TIME_WAIT", "FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK"})
"""States of a socket with no owner that its process has closed (an orphan)."""
_CHANGING: Final = frozenset({"state", "last_seen"})
"""The columns that change during a connection's life (the row's tail)."""
EARLIER_FLOW_KEYS: Final = 4
"""Flow keys a row keeps besides its current one, the latest first to stay.

A row gets another key when the event source reports a new flow on its
socket: a UDP socket that speaks again after longer than the source remembers
a flow (extension/collect/linux_events.py ``_UDP_IDLE_NS``). An earlier flow may
still be reported a read late (its end, say), and must reach the row, not make a
second one; a flow forgotten by the source is never reported again, so a long-lived
socket need not keep every key it ever had."""
_MAX_TAILS: Final = 4096
"""Encoded (state, last_seen) tails kept before the table of them starts over."""


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


def _addr(record: SocketRecord) -> _Addr:
    """(family, protocol, local address and port, remote address and port)."""
    return (
        record.family,
        record.protocol,
        record.local_address,
        record.local_port,
        record.remote_address,
        record.remote_port,
    )


def _same_socket(row: Row, record: SocketRecord) -> bool:
    """Whether a saved row's addresses and ports are the record's."""
    return (
        row.get("family") == str(record.family)
        and row.get("protocol") == str(record.protocol)
        and row.get("local_address", "") == record.local_address
        and row.get("local_port") == str(record.local_port)
        and row.get("remote_address", "") == record.remote_address
        and row.get("remote_port") == str(record.remote_port)
    )


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _record_of(row: Row) -> SocketRecord | None:
    """The socket a saved row describes, or None when the row is not usable."""
    family, protocol, local_port = _int(row.get("family")), _int(row.get("protocol")), _int(
        row.get("local_port"))  # fmt: skip
    if family is None or protocol is None or local_port is None:
        return None
    return SocketRecord(
        pid=_int(row.get("pid")),
        family=family,
        protocol=protocol,
        local_address=row.get("local_address", ""),
        local_port=local_port,
        remote_address=row.get("remote_address", ""),
        remote_port=_int(row.get("remote_port")) or 0,
        state="",
        socket=_int(row.get("socket")),
        net_namespace=_int(row.get("net_namespace")),
    )


def _process_of(row: Row) -> ProcessInfo:
    return ProcessInfo(
        name=row.get("name"),
        path=row.get("path"),
        cmdline=row.get("cmdline"),
        uid=_int(row.get("uid")),
        username=row.get("username"),
        parent=_int(row.get("parent")),
        parent_name=row.get("parent_name"),
        parent_path=row.get("parent_path"),
        start_time=_int(row.get("start_time")),
    )


def _born(conn: TrackedConnection) -> float:
    return conn.born


def _other_socket(conn: TrackedConnection, event: FlowEvent) -> bool:
    """Whether the row stands for another socket than the flow event's.

    Evidence: both inodes known and different; a row known only from events
    that follows another flow (the event source keys a flow by its socket);
    a UDP row owned by another process (two processes sending from one UDP
    socket is rare, a source port reused by the next process is common).
    """
    record, mine = event.record, conn.record
    if record.socket and mine.socket and record.socket != mine.socket:
        return True
    if not conn.sampled and conn.flow_key is not None and conn.flow_key != event.key:
        return True
    return (
        record.protocol == IPPROTO_UDP
        and record.pid is not None
        and mine.pid is not None
        and record.pid != mine.pid
    )


def _ownerless(record: SocketRecord) -> bool:
    return record.pid is None and not record.socket


@dataclass(slots=True, eq=False)
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
        status: how the attempt ended (see :data:`extension.model.STATUSES`);
            '' until known.
        key: its key in the tracker.
        sampled: True while the sampler follows it (its socket was listed);
            False for a row known only from flow events.
        settled: True once its stable columns may be served (see "Held rows").
        born: seconds since the Unix epoch when the tracker created it.
        began: seconds since the Unix epoch when the connection began, as
            precisely as known (the flow event's time, or the sample's).
        flow_key: the flow event key linked to it, if any.
        guessed_owner: True when the owner is the listener's, taken for an
            inbound connection no task has touched yet.
        hostname: (remote_hostname, remote_hostname_source), fixed when the
            row is first served; None when no name is known.
        saved_row: the stable columns it had before a restart, until they
            are encoded; None otherwise.
        missed_at: seconds since the Unix epoch of the sample that did not
            list its socket when the one before did; None while listed (one
            listing without it is no evidence that it closed).
    """

    record: SocketRecord
    process: ProcessInfo
    direction: str
    first_seen: int
    last_seen: int
    state: str
    closed_at: float | None = None
    served: bool = False
    status: str = ""
    key: _Key = ()
    sampled: bool = True
    settled: bool = True
    born: float = 0.0
    began: float = 0.0
    flow_key: _Key | None = None
    guessed_owner: bool = False
    hostname: tuple[str, str] | None = None
    saved_row: Row | None = None
    missed_at: float | None = None
    arena_chunk: Chunk | None = None

    def row(self) -> Row:
        """The table row: ``dict[str, str]`` keyed by column name, unknowns left out.

        The stable columns in column order (as served, once served), then
        ``state`` and ``last_seen`` (the columns that change). The reference
        the encoded rows are tested against.
        """
        if self.arena_chunk is not None:
            (row,) = decode_rows((self.arena_chunk.encoded(self),), 1)
        else:
            row = self.stable_row()
        row["state"] = self.state
        row["last_seen"] = str(self.last_seen)
        return row

    def stable_row(self) -> Row:
        """The stable columns: the row it had before a restart, or rendered now."""
        if self.saved_row is not None:
            return {k: v for k, v in self.saved_row.items() if k not in _CHANGING}
        return self._render_stable()

    def encode_stable(self) -> bytes:
        """The stable columns as a TBinaryProtocol ``map<string, string>``.

        Called once, when the row is first served (its stable columns are then
        fixed); the tracker's arena (extension/enrich/arena.py) keeps the bytes,
        the only copy of the row it holds from then on.
        """
        stable = self.stable_row()
        self.saved_row = None  # the bytes are the row now
        return map_header(len(stable)) + encode_pairs(stable.items())

    def final_status(self) -> str:
        """The status to serve: the known outcome, else what the state shows."""
        if self.status or self.record.protocol != IPPROTO_TCP or self.direction == "listening":
            return self.status
        if self.state == "SYN_SENT":
            return "timed_out"
        if self.state in ("SYN_RECV", "LISTEN", ""):
            return ""
        return "connected"

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
            "socket": record.socket or None,
            "net_namespace": record.net_namespace,
            "interface": record.interface,
            "direction": self.direction,
            "status": self.final_status(),
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
        if self.hostname is not None:
            values["remote_hostname"], values["remote_hostname_source"] = self.hostname
        row = {k: str(v) for k, v in values.items() if v is not None}
        for column, most in MAX_TEXT.items():
            text = row.get(column)
            if text is not None and len(text) > most:
                row[column] = cap_text(text, most)
        return row


class ConnectionTracker:
    """Merges samples and flow events into the table (not thread-safe; the sampler locks).

    Args:
        lookup: pid -> ProcessInfo (see ProcessTracker.lookup); called once per
            new connection, never for a connection already served.
        linger_secs: seconds a closed connection stays in the table.
        max_lingering: cap on closed connections kept, oldest dropped first.
        attempt_grace_secs: seconds a connection attempt's row waits for its
            outcome before it is served.
        holders: socket inode -> every pid holding it (the collector's), for
            telling accepted connections by evidence; None without.
        names: remembered DNS answers; each row gets its remote address's
            name when first served, and the tracker tells the cache who owns
            each DNS client socket (remote port 53). None for no names.
    """

    def __init__(
        self,
        lookup: Callable[[int | None], ProcessInfo],
        linger_secs: float = 6.0,
        max_lingering: int = 50_000,
        attempt_grace_secs: float = DEFAULT_ATTEMPT_GRACE_SECS,
        holders: Holders | None = None,
        *,
        names: NameCache | None = None,
    ) -> None:
        self._lookup = lookup
        self._holders = holders
        self._names = names
        self.linger_secs = linger_secs
        self.max_lingering = max_lingering
        self.attempt_grace_secs = attempt_grace_secs
        self._connections: dict[_Key, TrackedConnection] = {}
        # 5-tuples of closed connections: their ownerless TIME_WAIT remnants are
        # not new connections. Kept TOMBSTONE_SECS seconds, at most max_lingering.
        self._tombstones: OrderedDict[_Tuple5, float] = OrderedDict()
        # Open rows by addresses and ports (namespaces may be unknown for an
        # event); the rows known only from flow events; every row linked to a
        # flow event, by the event's key.
        self._open: dict[_Addr, list[TrackedConnection]] = {}
        self._unsampled: set[TrackedConnection] = set()
        self._flows: dict[_Key, TrackedConnection] = {}
        # Rows linked to more than one flow key: the keys before the current
        # one, which still lead to the row (late events under them) until it
        # leaves the table.
        self._earlier_flows: dict[TrackedConnection, list[_Key]] = {}
        # Open listening rows by (protocol, port), for inbound owners.
        self._listening: dict[tuple[int, int], list[TrackedConnection]] = {}
        # (namespace, protocol, local port) of UDP sockets seen sending, with when.
        self._senders: OrderedDict[tuple[int | None, int], float] = OrderedDict()
        # Closed rows in the order they closed, for linger expiry; closed rows
        # no query has shown yet, set aside in the same order; whether a
        # closed row has been shown since the last expiry.
        self._closed: deque[TrackedConnection] = deque()
        self._unshown: deque[TrackedConnection] = deque()
        self._shown_closed = False
        # Rows saved before a restart, by socket key, until the first sample.
        self._restored: dict[_Key, SavedRow] = {}
        self._now = 0.0
        self.evicted = 0
        self.revived = 0
        self.events_through: float | None = None
        """With kernel events: seconds since the Unix epoch up to which they
        have been merged. A row a sample found later than that waits for
        them, since they say who opened it."""
        self.version = 0
        """Grows whenever the set of served rows changes (for saving)."""
        # (state, last_seen) -> their encoded entries, shared by the rows.
        self._tails: dict[tuple[str, int], bytes] = {}
        # Every row in the table is either served, with its stable columns in
        # the arena, or waiting to be served (in the order it came).
        self._arena = RowArena()
        self._pending: dict[TrackedConnection, None] = {}
        # The last sample's records by id (kept alive, so an id is never
        # reused while it is here), the open rows they stand for, a record id
        # of each key (the others, where several records share a key, aside),
        # the listeners among them, and the open rows the sampler follows that
        # no listed record stands for yet.
        self._listed: dict[int, SocketRecord] = {}
        self._bound: dict[int, TrackedConnection] = {}
        self._listed_keys: dict[_Key, int] = {}
        self._duplicate_keys: dict[_Key, list[int]] = {}
        # Ids of the listed TIME_WAIT records by namespace: a sample that
        # leaves them out (time_wait_unlisted) does not make them gone.
        self._time_wait: dict[int | None, set[int]] = {}
        self._listeners: Listeners = {}
        self._unbound: set[TrackedConnection] = set()
        self._sample_second = 0
        """Second of the last sample: the last_seen of every open row it listed."""

    @property
    def tracked(self) -> int:
        """Connections in the table, open or lingering."""
        return len(self._connections)

    @property
    def lingering(self) -> int:
        """Closed connections still in the table."""
        return len(self._closed) + len(self._unshown)

    # ---------------------------------------------------------------- samples

    def update(
        self,
        records: Iterable[SocketRecord],
        now: float,
        started: float | None = None,
        *,
        time_wait_unlisted: int | None = None,
    ) -> None:
        """Merge one sample.

        Args:
            records: every socket of the sample (a complete list).
            now: the sample's time, seconds since the Unix epoch.
            started: when the listing began (defaults to ``now``): a flow event
                older than that whose socket is not in the list has closed.
            time_wait_unlisted: a network namespace whose TIME_WAIT sockets the
                sample left out: its TIME_WAIT rows stay as they are.
        """
        records = list(records)
        second = int(now)
        self._now = max(self._now, now)
        # Records are compared by identity: a collector hands back the very
        # record of a socket that did not change, and such a socket needs no
        # work at all. Only records new since the last sample (new sockets,
        # changed states and owners) and those gone since are looked at.
        listed, bound, keys = self._listed, self._bound, self._listed_keys
        ids = dict(zip(map(id, records), records, strict=True))
        check, self._unbound = self._unbound, set()
        listeners = self._listeners
        dups = self._duplicate_keys
        waiting = self._time_wait
        gone = listed.keys() - ids.keys()
        if time_wait_unlisted is not None and time_wait_unlisted in waiting:
            gone -= waiting[time_wait_unlisted]  # not listed this time, not gone
        for rid in gone:
            record = listed.pop(rid)
            if record.state == "TIME_WAIT":
                waiting[record.net_namespace].discard(rid)
            key = _key(record)
            others = dups.get(key)
            if others is None:
                del keys[key]
            else:
                if keys[key] == rid:
                    keys[key] = others.pop()
                else:
                    others.remove(rid)
                if not others:
                    del dups[key]
            conn = bound.pop(rid, None)
            if conn is not None:
                check.add(conn)
            if is_listening(record):
                group = listeners.get(endpoint_of(record), [])
                if record in group:
                    group.remove(record)
        current: dict[_Key, SocketRecord] = {}
        for rid in ids.keys() - listed.keys():
            record = listed[rid] = ids[rid]
            key = _key(record)
            current.setdefault(key, record)
            if keys.setdefault(key, rid) != rid:
                dups.setdefault(key, []).append(rid)
            if record.state == "TIME_WAIT":
                waiting.setdefault(record.net_namespace, set()).add(rid)
            if is_listening(record):
                listeners.setdefault(endpoint_of(record), []).append(record)
        if self._unsampled:
            check |= self._adopt(current, now if started is None else started)

        listing_began = now if started is None else started
        for conn in sorted(check, key=_born) if len(check) > 1 else check:
            key = conn.key
            if conn.closed_at is not None or not conn.sampled or (
                    self._connections.get(key) is not conn):  # fmt: skip
                continue
            seen = current.pop(key, None)
            if seen is None:
                other = keys.get(key)
                if other is not None and other not in bound:
                    seen = listed[other]
            if seen is None:
                if conn.began >= listing_began or (
                    conn.state == "TIME_WAIT"
                    and time_wait_unlisted is not None
                    and conn.record.net_namespace == time_wait_unlisted
                ):
                    # Began after the listing did (a flow event's socket), or
                    # left out of it: not listed this time, not gone.
                    self._unbound.add(conn)
                    continue
                if conn.missed_at is None and conn.state != "TIME_WAIT" and (
                        ("tuple", None, *_tuple5(conn.record)) not in keys):  # fmt: skip
                    # A listing walks the kernel's hash tables while sockets
                    # move, and may skip one: closed only when the next
                    # listing leaves it out too, or lists its ownerless
                    # remnant (TIME_WAIT, or an orphan still closing). A
                    # TIME_WAIT row (a remnant's own) closes at once: TIME_WAIT
                    # is listed only every few samples, and waiting for a
                    # second listing kept thousands of them 8 samples longer.
                    conn.missed_at = now
                    conn.last_seen = max(conn.last_seen, self._sample_second)  # listed last
                    self._unbound.add(conn)
                    continue
                # Closed since the first listing that left it out.
                self._close(conn, now if conn.missed_at is None else conn.missed_at)
                continue
            conn.missed_at = None
            bound[id(seen)] = conn
            conn.last_seen = second
            conn.state = seen.state
            if not conn.served and conn.record.pid is None and seen.pid is not None:
                # The owner became known before osqueryd saw the row.
                conn.record = seen
                conn.process = self._lookup(seen.pid)
        self._sample_second = second
        if self._unsampled:
            self._reconcile(records, now, now if started is None else started)

        for key, record in current.items():
            if _ownerless(record):
                tuple5 = _tuple5(record)
                if tuple5 in self._tombstones or (None, *tuple5[1:]) in self._tombstones:
                    # The TIME_WAIT (or other ownerless) remnant of a connection
                    # that has already been shown and closed.
                    continue
            known = self._connections.get(key)
            if known is not None and known.closed_at is None and known.sampled:
                continue  # the socket of a row still open, listed twice
            direction = direction_of(record, listeners, self._holders)
            if direction == "listening" and record.protocol == IPPROTO_UDP and self._sent_from(
                record
            ):
                direction = ""  # an unconnected socket its owner sends from
            saved = self._restored.pop(key, None) if self._restored else None
            if saved is not None and _same_socket(saved.row, record):
                self._place(key, self._revive(saved, record, now))
                bound[id(record)] = self._connections[key]
                continue
            conn = TrackedConnection(
                record=record,
                process=self._lookup(record.pid),
                direction=direction,
                first_seen=second,
                last_seen=second,
                state=record.state,
                born=now,
                began=now,
            )
            self._place(key, conn)
            bound[id(record)] = conn
        # What the first sample did not find closed while no extension ran.
        self._restored.clear()
        self._expire(now)

    def _adopt(self, current: dict[_Key, SocketRecord], started: float) -> set[TrackedConnection]:
        """Give flow-event rows whose socket the sample lists the socket's key.

        A listed ownerless remnant (TIME_WAIT, or an orphan still closing) is
        no socket to follow: it says the row's socket was closed, so the row
        closes (its close event was lost, or is not merged yet).

        Returns:
            the rows adopted.
        """
        adopted: set[TrackedConnection] = set()
        for key, record in current.items():
            known = self._connections.get(key)
            if known is not None and known.closed_at is None:
                continue
            conn = self._find(record, sampled=False)
            if conn is None:
                continue
            if _ownerless(record) and record.state in _REMNANT_STATES:
                if conn.began < started:
                    self._unsampled.discard(conn)
                    self._close(conn, started)
                continue
            self._unsampled.discard(conn)
            del self._connections[conn.key]
            conn.sampled = conn.settled = True
            conn.missed_at = None
            self._place(key, conn, index=False)
            adopted.add(conn)
            if not conn.served:
                # The socket's holder now (a listener handed to a child, say)
                # beats the task that made it.
                pid = record.pid if record.pid is not None else conn.record.pid
                if pid != conn.record.pid or conn.process.name is None:
                    conn.process = self._lookup(pid)
                conn.record = replace(record, pid=pid)
                conn.guessed_owner = False
        return adopted

    def _reconcile(self, records: list[SocketRecord], now: float, started: float) -> None:
        """Settle flow-event rows the sample could have seen but did not list.

        A row that began before the listing started and whose socket is not
        in it has closed, except a UDP flow sent from an unconnected socket
        that is still listed (its 5-tuple is not the socket's): that flow
        stays open, up to ``_UDP_SENDER_SECS`` after its last datagram.
        """
        unconnected: set[tuple[int | None, int]] | None = None
        unconnected_ports: set[int] = set()
        for conn in list(self._unsampled):
            if conn.began >= started:
                continue  # began after the listing started
            record = conn.record
            if record.protocol == IPPROTO_UDP and now - conn.last_seen <= _UDP_SENDER_SECS:
                if unconnected is None:
                    unconnected = {
                        (r.net_namespace, r.local_port)
                        for r in records
                        if r.protocol == IPPROTO_UDP and not r.remote_address
                    }
                    unconnected_ports = {port for _, port in unconnected}
                if (record.net_namespace, record.local_port) in unconnected or (
                    record.net_namespace is None and record.local_port in unconnected_ports
                ):
                    conn.settled = True
                    continue
            if conn.missed_at is None:
                conn.missed_at = started  # one listing may skip a socket: closed on the next
                continue
            self._unsampled.discard(conn)
            self._close(conn, conn.missed_at)

    def _sent_from(self, record: SocketRecord) -> bool:
        at = self._senders.get((record.net_namespace, record.local_port))
        return at is not None and self._now - at <= _UDP_SENDER_SECS

    # ---------------------------------------------------------------- events

    def observe(self, events: Iterable[FlowEvent], now: float) -> None:
        """Merge flow events from the kernel event source.

        Args:
            events: new or updated flows, in the order they began.
            now: seconds since the Unix epoch.
        """
        self._now = max(self._now, now)
        second = int(now)
        for event in events:
            record = event.record
            if record.protocol == IPPROTO_UDP:
                self._note_sender(record, now)
            conn = self._flows.get(event.key)
            if conn is None:
                conn = self._link(event)
            if conn is None:
                if event.ended is not None:
                    self._create_closed(event, now)
                    continue
                conn = self._create(event, now)
                if record.pid is None and event.direction == "inbound":
                    self._owner_from_listener(conn)
            elif not conn.served:
                self._learn(conn, event)
            if record.protocol == IPPROTO_TCP and record.state:
                conn.state = record.state
            conn.last_seen = max(conn.last_seen, int(event.ended or second))
            if event.ended is not None and conn.closed_at is None:
                # The kernel closed it: a sample would no longer list it either.
                self._close(conn, event.ended)
        self._expire(now)

    def _link(self, event: FlowEvent) -> TrackedConnection | None:
        """The open row that already stands for this flow's socket, linked to it."""
        record = event.record
        conn = self._connections.get(_key(record)) if record.socket else None
        if conn is None or conn.closed_at is not None:
            self._end_superseded(event)
            conn = self._find(record, sampled=None, event=event)
        if conn is None:
            return None
        old = conn.flow_key
        if old is not None and old != event.key and self._flows.get(old) is conn:
            # The earlier key still leads to the row: a late event under it
            # (its flow's end, say) is this row's, even once it has closed,
            # not a new row. _drop lets go of them all with the row.
            earlier = self._earlier_flows.setdefault(conn, [])
            earlier.append(old)
            if len(earlier) > EARLIER_FLOW_KEYS:
                oldest = earlier.pop(0)
                if self._flows.get(oldest) is conn:
                    del self._flows[oldest]
        conn.flow_key = event.key
        self._flows[event.key] = conn
        return conn

    def _end_superseded(self, event: FlowEvent) -> None:
        """Close the event-only rows on this flow's 5-tuple that stand for another socket.

        Two live sockets do not share a connection's 5-tuple: when the event
        source reports a new flow on it (another process reusing a UDP source
        port, say), the socket of the older flow is gone.
        """
        record = event.record
        namespace = record.net_namespace
        for conn in list(self._open.get(_addr(record), ())):
            other = conn.record.net_namespace
            if conn.sampled or (namespace is not None and other is not None and other != namespace):
                continue
            if _other_socket(conn, event):
                self._unsampled.discard(conn)
                self._close(conn, max(event.started, conn.began))

    def _find(
        self, record: SocketRecord, sampled: bool | None, event: FlowEvent | None = None
    ) -> TrackedConnection | None:
        """The one open row with ``record``'s addresses and ports in its namespace.

        A namespace that is unknown on either side matches any. ``sampled``
        restricts the search to rows the sampler follows (True), to rows
        known only from events (False), or not at all (None). With ``event``,
        rows that stand for another socket than the event's flow are left
        out. None when there is no such row or more than one.
        """
        found: TrackedConnection | None = None
        namespace = record.net_namespace
        for conn in self._open.get(_addr(record), ()):
            if sampled is not None and conn.sampled != sampled:
                continue
            if event is not None and _other_socket(conn, event):
                continue
            other = conn.record.net_namespace
            if namespace is not None and other is not None and other != namespace:
                continue
            if found is not None:
                return None
            found = conn
        return found

    def _create(self, event: FlowEvent, now: float) -> TrackedConnection:
        record = event.record
        sampled = bool(record.socket) and record.net_namespace is not None
        conn = TrackedConnection(
            record=record,
            process=event.process or ProcessInfo(),
            direction=event.direction,
            first_seen=int(event.started),
            last_seen=int(now),
            state=record.state,
            status=event.status,
            sampled=sampled,
            settled=sampled or event.ended is not None,
            born=now,
            began=event.started,
            flow_key=event.key,
        )
        self._place(_key(record) if sampled else ("flow", *event.key), conn)
        self._flows[event.key] = conn
        if sampled:
            self._unbound.add(conn)  # the next sample lists its socket or closes it
        else:
            self._unsampled.add(conn)
        return conn

    def _create_closed(self, event: FlowEvent, now: float) -> None:
        """A flow that began and ended between two reads: a lingering row at once.

        It is never looked up again by its flow key (its end is final), so
        only the linger queue and the TIME_WAIT tombstones learn of it.
        """
        record = event.record
        ended = event.ended if event.ended is not None else now
        conn = TrackedConnection(
            record=record,
            process=event.process or ProcessInfo(),
            direction=event.direction,
            first_seen=int(event.started),
            last_seen=int(ended),
            state=record.state,
            closed_at=ended,
            status=event.status,
            sampled=False,
            born=now,
            began=event.started,
        )
        if record.pid is None and event.direction == "inbound":
            self._owner_from_listener(conn)
        self._place(("flow", *event.key), conn, index=False)
        self._closed.append(conn)
        tuple5 = _tuple5(conn.record)
        self._tombstones[tuple5] = ended
        self._tombstones.move_to_end(tuple5)

    def _learn(self, conn: TrackedConnection, event: FlowEvent) -> None:
        """Take what a flow event knows into a row not yet served."""
        record = event.record
        conn.began = min(conn.began, event.started)
        if event.status:
            conn.status = event.status
        if event.ended is not None:
            conn.settled = True
        if record.socket and not conn.record.socket:
            conn.record = replace(conn.record, socket=record.socket,
                                  net_namespace=record.net_namespace)  # fmt: skip
            conn.settled = True
        direction = conn.direction
        if event.direction in ("inbound", "outbound"):
            direction = event.direction  # who connected is evidence; ports are a guess
        local = conn.record.local_address
        if local in _WILDCARDS and record.local_address not in _WILDCARDS:
            local = record.local_address
        if direction != conn.direction or local != conn.record.local_address:
            self._change(conn, replace(conn.record, local_address=local), direction)
        if record.pid is not None and (conn.record.pid is None or conn.guessed_owner):
            # The task that connected, listened, sent, or held an inbound socket.
            namespace = conn.record.net_namespace
            if namespace is None:
                namespace = record.net_namespace
            conn.record = replace(conn.record, pid=record.pid, net_namespace=namespace)
            conn.process = event.process or self._lookup(record.pid)
            conn.guessed_owner = False
            self._note_dns_client(conn)
        elif conn.record.pid is None and event.direction == "inbound":
            self._owner_from_listener(conn)

    def _owner_from_listener(self, conn: TrackedConnection) -> None:
        """An inbound connection no task has touched: owned by its listener's owner."""
        record = conn.record
        namespace = record.net_namespace
        candidates = [
            c
            for c in self._listening.get((record.protocol, record.local_port), ())
            if c.closed_at is None
            and c.record.local_address in (record.local_address, "0.0.0.0", "::")
            and (namespace is None or c.record.net_namespace in (namespace, None))
        ]
        owners = {c.record.pid for c in candidates if c.record.pid is not None}
        if len(owners) != 1:
            return  # no listener known, or several owners: unknown rather than guessed
        chosen = next(c for c in candidates if c.record.pid is not None)
        conn.record = SocketRecord(
            chosen.record.pid,
            record.family,
            record.protocol,
            record.local_address,
            record.local_port,
            record.remote_address,
            record.remote_port,
            record.state,
            record.socket,
            namespace if namespace is not None else chosen.record.net_namespace,
        )
        conn.process = chosen.process
        conn.guessed_owner = True

    def _note_sender(self, record: SocketRecord, now: float) -> None:
        key = (record.net_namespace, record.local_port)
        self._senders[key] = now
        self._senders.move_to_end(key)
        while len(self._senders) > self.max_lingering:
            self._senders.popitem(last=False)

    # ------------------------------------------------------------------ rows

    def rows(self, now: float | None = None) -> list[Row]:
        """Every connection in the table, open or lingering, that may be served.

        The rows of :meth:`encoded_rows`, decoded.

        Args:
            now: seconds since the Unix epoch (defaults to the latest merge).

        Returns:
            list of rows, each ``dict[str, str]`` keyed by column name.
        """
        pieces, count = self.encoded_rows(now)
        return decode_rows(list(pieces), count)

    def encoded_rows(
        self, now: float | None = None, *, stable_only: bool = False
    ) -> tuple[Iterable[bytes], int]:
        """Every row that may be served, as TBinaryProtocol ``map<string, string>`` bytes.

        A row first served now gets its stable columns fixed and encoded
        (:meth:`TrackedConnection.encode_stable`) into the arena
        (extension/enrich/arena.py), in the order rows are first served.

        - ``stable_only``: each row's stable columns alone: the arena's
          buffers as they are, rebuilt only where rows came or went since the
          last call. For a query that reads no ``state`` nor ``last_seen``.
        - Otherwise every column. Rows are grouped by their ``state`` and
          ``last_seen`` (and their number of stable entries), which every open
          row the last sample listed in one state shares, so a row costs one
          list append here; each group's rows are copied out of the arena's
          buffers and joined when sent (:class:`extension.enrich.wire.GroupedRows`).

        Args:
            now: seconds since the Unix epoch (defaults to the latest merge).
            stable_only: leave ``state`` and ``last_seen`` out.

        Returns:
            (pieces, rows): the encoded maps, joined into pieces (re-iterable;
            each piece is made when reached), and the number of rows. With
            every column, the groups of rows last seen at the last sample come
            first, each group in the order of its first row in the arena, and
            the rows of a group in the arena's order.
        """
        now = self._now if now is None else now
        pending = self._pending
        if pending:
            waiting = len(pending)
            serve_now = self._serve_now
            for conn in list(pending):
                serve_now(conn, now)
            if len(pending) < waiting // 4:
                self._pending = dict(pending)  # a dict keeps its size: let it go
        arena = self._arena
        if stable_only:
            return arena.pieces(), arena.count
        tails = self._tails
        if len(tails) > _MAX_TAILS:
            tails.clear()
        # Rows seen at the last sample, by state (nearly all of them); the others
        # by (state, last_seen); both also by their number of stable entries.
        # Each group's rows as their places in the arena's buffers, chunk by chunk.
        listed: dict[tuple[str, int], list[Segment]] = {}
        others: dict[tuple[str, int, int], list[Segment]] = {}
        listed_at = self._sample_second
        for chunk in arena.chunks():
            # Nearly always every row of a chunk has the same number of stable
            # entries; the rows are then keyed without it.
            counts = chunk.entries
            same = counts[0] if counts.count(counts[0]) == len(counts) else None
            here: dict[Any, list[int]] = {}
            there: dict[Any, list[int]] = {}
            for index, (conn, entries) in enumerate(zip(chunk.rows, counts, strict=True)):
                seen = conn.last_seen
                if seen == listed_at or (seen < listed_at and conn.closed_at is None
                                         and conn.sampled and conn.missed_at is None):  # fmt: skip
                    # An open row the last sample listed.
                    key = conn.state if same is not None else (conn.state, entries)
                    group = here.get(key)
                    if group is None:
                        group = here[key] = []
                else:
                    key = (conn.state, seen) if same is not None else (conn.state, seen, entries)
                    group = there.get(key)
                    if group is None:
                        group = there[key] = []
                group.append(index)
            data, ends, splitter = chunk.data, chunk.ends, chunk.splitter()
            for key, places in here.items():
                full = (key, same) if same is not None else key
                listed.setdefault(full, []).append((data, ends, splitter, places))
            for key, places in there.items():
                full = (*key, same) if same is not None else key
                others.setdefault(full, []).append((data, ends, splitter, places))
        keyed = [((state, listed_at, entries), segs) for (state, entries), segs in listed.items()]
        keyed += others.items()
        groups: list[RowGroup] = []
        for (state, seen, entries), segments in keyed:
            tail = tails.get((state, seen))
            if tail is None:
                tail = tails[(state, seen)] = tail_bytes(state, seen)
            groups.append((map_header(entries + 2), tail, segments))
        return GroupedRows(groups), arena.count

    def _serve_now(self, conn: TrackedConnection, now: float) -> bool:
        """Whether a row not yet served may be served now; marks it served if so."""
        if not conn.settled:
            return False
        through = self.events_through
        if through is not None and conn.flow_key is None and conn.born > through and (
                now - conn.born < EVENTS_WAIT_SECS):  # fmt: skip
            return False  # kernel events about it may still be on their way
        if conn.state == "SYN_SENT" and not conn.status and now - conn.born < (
                self.attempt_grace_secs):  # fmt: skip
            return False
        if self._names is not None:
            self._name(conn)
        conn.served = True
        del self._pending[conn]
        self._arena.add(conn, conn.encode_stable())
        if conn.closed_at is not None:
            self._shown_closed = True
        self.version += 1
        return True

    def _name(self, conn: TrackedConnection) -> None:
        """Fix the row's remote_hostname (see extension.enrich.names for the rule)."""
        record = conn.record
        if record.remote_address in _WILDCARDS or conn.direction == "listening":
            return
        assert self._names is not None
        conn.hostname = self._names.lookup(
            record.net_namespace, record.remote_address, record.pid, conn.began
        )

    def _note_dns_client(self, conn: TrackedConnection) -> None:
        """Tell the name cache who owns a DNS client socket, since when."""
        record = conn.record
        if self._names is not None and record.remote_port == 53 and record.pid is not None:
            self._names.note_client(
                record.net_namespace, record.protocol, record.local_port, record.pid, conn.began
            )

    # -------------------------------------------------------------- restarts

    def saved_rows(self) -> list[SavedRow]:
        """The rows osqueryd has been shown, open or lingering, for saving."""
        return self.saved_rows_later()()

    def saved_rows_later(self) -> Callable[[], list[SavedRow]]:
        """:meth:`saved_rows` as they are now, to be decoded later, by the returned
        callable, without the tracker's lock: what may change is read now (a
        pass over the rows), the encoded maps are decoded then (nearly all of
        the work: about 8 µs per row)."""
        served = [conn for conn in self._connections.values() if conn.served]
        facts = [(_key(conn.record) if conn.sampled else None, conn.closed_at, conn.state)
                 for conn in served]  # fmt: skip
        held = self._arena.held()

        def decoded() -> list[SavedRow]:
            maps = dict(maps_of(held))
            stable = decode_rows([maps[conn] for conn in served], len(served))
            return [
                SavedRow(identity, row, closed_at, state)
                for (identity, closed_at, state), row in zip(facts, stable, strict=True)
            ]

        return decoded

    def restore(self, saved: Iterable[SavedRow], now: float) -> None:
        """Take back rows saved before a restart (call before the first sample).

        Closed rows linger on; rows known only from events stay open until a
        sample no longer lists their socket; the others wait for the first
        sample, which gives each its old row if it finds the same socket.
        """
        for item in saved:
            record = _record_of(item.row)
            if record is None:
                continue
            if item.closed_at is not None:
                if now - item.closed_at <= self.linger_secs:
                    conn = self._revive(item, record, now)
                    self._place(("saved", id(conn)), conn, index=False)
                    self._close(conn, item.closed_at)
            elif item.identity is None:
                conn = self._revive(item, record, now)
                conn.sampled = False
                self._place(("saved", id(conn)), conn)
                self._unsampled.add(conn)
            else:
                self._restored[tuple(item.identity)] = item

    def _revive(self, saved: SavedRow, record: SocketRecord, now: float) -> TrackedConnection:
        """A connection with the row it had before the restart, shown already."""
        row = saved.row
        stable = _record_of(row) or record
        conn = TrackedConnection(
            record=replace(stable, socket=record.socket, net_namespace=record.net_namespace),
            process=_process_of(row),
            direction=row.get("direction", ""),
            first_seen=int(row.get("first_seen", int(now))),
            last_seen=int(now),
            state=record.state or saved.state,
            served=True,
            status=row.get("status", ""),
            born=now,
            began=now,
        )
        # The table's stable columns only: a state file is read back as any map
        # of text, and the arena holds maps of fewer than 256 entries.
        conn.saved_row = {k: v for k, v in row.items() if k in STABLE_COLUMNS}
        self.revived += 1
        return conn

    # ------------------------------------------------------------ bookkeeping

    def _place(self, key: _Key, conn: TrackedConnection, index: bool = True) -> None:
        """Put ``conn`` at ``key``; a lingering row there moves aside (both stay)."""
        old = self._connections.pop(key, None)
        if old is not None:
            old.key = (*key, "closed", old.first_seen, id(old))
            self._connections[old.key] = old
        conn.key = key
        self._connections[key] = conn
        if conn.arena_chunk is None and conn not in self._pending:  # a new row
            if conn.served:  # shown before a restart
                self._arena.add(conn, conn.encode_stable())
            else:
                self._pending[conn] = None
        if conn.record.remote_port == 53:
            self._note_dns_client(conn)
        if index and conn.closed_at is None:
            self._index(conn)

    def _index(self, conn: TrackedConnection) -> None:
        self._open.setdefault(_addr(conn.record), []).append(conn)
        if conn.direction == "listening":
            port = (conn.record.protocol, conn.record.local_port)
            self._listening.setdefault(port, []).append(conn)

    def _unindex(self, conn: TrackedConnection) -> None:
        addr = _addr(conn.record)
        group = self._open.get(addr)
        if group is not None and conn in group:
            group.remove(conn)
            if not group:
                del self._open[addr]
        port = (conn.record.protocol, conn.record.local_port)
        listeners = self._listening.get(port)
        if listeners is not None and conn in listeners:
            listeners.remove(conn)
            if not listeners:
                del self._listening[port]

    def _change(self, conn: TrackedConnection, record: SocketRecord, direction: str) -> None:
        """Give an open row another record or direction, keeping the indexes right."""
        if conn.closed_at is None:
            self._unindex(conn)
        conn.record, conn.direction = record, direction
        if conn.closed_at is None:
            self._index(conn)

    def _close(self, conn: TrackedConnection, at: float) -> None:
        if conn.sampled and conn.missed_at is None and conn.last_seen < self._sample_second:
            conn.last_seen = self._sample_second  # listed by the last sample
        conn.closed_at = at
        conn.settled = True
        self.version += 1
        self._closed.append(conn)
        self._unsampled.discard(conn)
        self._unindex(conn)
        if not _ownerless(conn.record) or not conn.sampled:
            tuple5 = _tuple5(conn.record)
            self._tombstones[tuple5] = at
            self._tombstones.move_to_end(tuple5)

    def _expire(self, now: float) -> None:
        tomb_limit = now - TOMBSTONE_SECS
        while self._tombstones:
            tuple5, at = next(iter(self._tombstones.items()))
            if at >= tomb_limit and len(self._tombstones) <= self.max_lingering:
                break
            del self._tombstones[tuple5]
        # Rows close in about the order of their closed_at (events may come a
        # read late), so the queue's head is the next to expire; one closed a
        # little early behind a later one lingers a little longer, never less.
        limit = now - self.linger_secs
        unserved_limit = now - UNSERVED_LINGER_SECS
        closed, unshown = self._closed, self._unshown
        if self._shown_closed:
            # Rows set aside unshown that a query has shown since: due now,
            # they linger like the others (at the queue's end: a little
            # longer, never less).
            self._shown_closed = False
            closed.extend(c for c in unshown if c.served)
            self._unshown = unshown = deque(c for c in unshown if not c.served)
        while closed:
            head = closed[0]
            at = head.closed_at if head.closed_at is not None else now
            over = len(closed) + len(unshown) > self.max_lingering
            if not over and at >= limit:
                break  # not due
            closed.popleft()
            if not over and not head.served and at >= unserved_limit:
                # Never shown yet (no query since, or a slow one): set aside
                # until it is, without holding back the rows behind it.
                unshown.append(head)
                continue
            self._drop(head, counted=over or not head.served)
        while unshown:
            head = unshown[0]
            at = head.closed_at if head.closed_at is not None else now
            if not head.served and at >= unserved_limit and (
                    len(closed) + len(unshown) <= self.max_lingering):  # fmt: skip
                break
            unshown.popleft()
            if head.served:
                closed.append(head)
            else:
                self._drop(head, counted=True)

    def _drop(self, head: TrackedConnection, *, counted: bool) -> None:
        """Take a closed row out of the table (``counted``: in ``evicted``)."""
        self.version += 1
        if counted:
            self.evicted += 1
        if self._connections.get(head.key) is head:
            del self._connections[head.key]
        self._arena.remove(head)
        self._pending.pop(head, None)
        if head.flow_key is not None and self._flows.get(head.flow_key) is head:
            del self._flows[head.flow_key]
        if self._earlier_flows:
            for key in self._earlier_flows.pop(head, ()):
                if self._flows.get(key) is head:
                    del self._flows[key]
