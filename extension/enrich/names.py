"""Address -> name, from the DNS answers this host received, per network namespace.

The capture (:mod:`extension.collect.dns_capture`) adds every usable answer:
the question name, its addresses and TTLs, the namespace it was seen in,
when it arrived at the earliest, and the DNS client socket it was delivered
to (protocol, local port). The connection tracker tells which process owned
which DNS client socket, and asks for a connection's name once, when its row
is first served.

**The rule** (:meth:`NameCache.lookup`). Only answers that may have
arrived before the connection began and whose TTL (at least
``ttl_floor_secs``) still ran then count. Of those:

1. ``process``: the latest answer seen in the connection's own network
   namespace that was delivered to a DNS client socket this process owned;
2. ``namespace``: else the latest answer seen in the connection's own
   namespace, delivered to any socket: another process's lookup, a local
   caching resolver's, or one whose client socket no sample or kernel
   event saw;
3. ``host``: else the latest answer for the address seen in any other
   namespace of the host: a guess only.

So where several names map to one address, the most recent answer wins,
one the process itself received before any other.

Bounded: at most ``max_entries`` (namespace, address) pairs, the least
recently answered dropped first; for each, every answer of the last
``HISTORY_SECS`` and the latest of each name before, at most
``MAX_ANSWERS_PER_ADDRESS`` (then the 24 latest that rule keeps); at most
``max_entries`` DNS client sockets remembered. Thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_TTL_FLOOR_SECS",
    "SOURCES",
    "NameCache",
]

DEFAULT_TTL_FLOOR_SECS: Final = 60.0
"""Shortest time an answer is remembered, whatever its TTL: a process may
connect some seconds after its lookup, and answers with TTLs of 0 to 30 s are
common behind load balancers."""
DEFAULT_MAX_ENTRIES: Final = 20_000
HISTORY_SECS: Final = 10.0
"""Every answer of the last seconds is kept, so a row served some seconds
after its connection (the pack runs every 2 s) still finds the answer that
came before it, however often the name was asked again since."""
MAX_ANSWERS_PER_ADDRESS: Final = 32
_OWNERS_PER_CLIENT: Final = 4
_PRUNED_TO: Final = 24
EARLY_SLACK_SECS: Final = 0.0001
"""An answer counts when it arrived up to this long after the connection's
start: both times come from the kernel, the events' put on the wall clock
with its offset read a little later (see extension.collect.dns_capture)."""
SOURCES: Final = ("process", "namespace", "host")
"""Values of ``remote_hostname_source``."""

_Client = tuple[int | None, int, int]
"""(network namespace inode, protocol, local port) of a DNS client socket."""


@dataclass(slots=True)
class _Seen:
    name: str
    arrived: float
    """Seconds since the Unix epoch: the answer arrived no earlier than this."""
    expires: float
    client: _Client | None


class NameCache:
    """Remembered DNS answers, by (network namespace, address).

    Args:
        ttl_floor_secs: shortest time an answer is remembered.
        max_entries: most (namespace, address) pairs, and most DNS client
            sockets, remembered.
    """

    def __init__(
        self,
        ttl_floor_secs: float = DEFAULT_TTL_FLOOR_SECS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.ttl_floor_secs = ttl_floor_secs
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[int | None, str], list[_Seen]] = OrderedDict()
        self._anywhere: OrderedDict[str, tuple[int | None, _Seen]] = OrderedDict()
        self._clients: OrderedDict[_Client, list[tuple[float, int]]] = OrderedDict()

    @property
    def size(self) -> int:
        """(namespace, address) pairs remembered."""
        return len(self._seen)

    def add(
        self,
        namespace: int | None,
        name: str,
        addresses: list[tuple[str, int]],
        arrived: float,
        client: _Client | None = None,
    ) -> None:
        """Remember one answer.

        Args:
            namespace: inode of the network namespace it was seen in.
            name: the name asked (see :func:`extension.collect.dns_wire.parse_answer`).
            addresses: [(address, TTL seconds)].
            arrived: seconds since the Unix epoch; it arrived no earlier.
            client: the DNS client socket it was delivered to, if known.
        """
        floor = self.ttl_floor_secs
        with self._lock:
            seen, anywhere = self._seen, self._anywhere
            for address, ttl in addresses:
                entry = _Seen(name, arrived, arrived + max(float(ttl), floor), client)
                key = (namespace, address)
                names = seen.get(key)
                if names is None:
                    seen[key] = [entry]
                    if len(seen) > self.max_entries:
                        seen.popitem(last=False)
                else:
                    seen.move_to_end(key)
                    last = names[-1]
                    if last.name == name and last.client == client and last.arrived <= arrived:
                        # The same name again to the same socket: the earlier
                        # arrival answers every lookup the later one would.
                        last.expires = max(last.expires, entry.expires)
                    else:
                        names.append(entry)
                        if len(names) > MAX_ANSWERS_PER_ADDRESS:
                            _prune(names, arrived - HISTORY_SECS)
                anywhere[address] = (namespace, entry)
                anywhere.move_to_end(address)
                if len(anywhere) > self.max_entries:
                    anywhere.popitem(last=False)

    def note_client(
        self, namespace: int | None, protocol: int, local_port: int, pid: int, at: float
    ) -> None:
        """Record that ``pid`` owned the DNS client socket at this namespace, protocol and
        port from ``at`` (seconds since the Unix epoch) on: ports are reused, so the
        owner of an answer's socket is the one noted last before the answer came."""
        key = (namespace, protocol, local_port)
        with self._lock:
            owners = self._clients.get(key)
            if owners is None:
                self._clients[key] = [(at, pid)]
                if len(self._clients) > self.max_entries:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
                if (at, pid) not in owners:
                    owners.append((at, pid))
                    owners.sort()
                    del owners[:-_OWNERS_PER_CLIENT]

    def lookup(
        self, namespace: int | None, address: str, pid: int | None, began: float
    ) -> tuple[str, str] | None:
        """The name for a connection to ``address``, and where it comes from.

        Args:
            namespace: the connection's network namespace inode.
            address: its remote address, as the table shows it.
            pid: its owner, or None.
            began: seconds since the Unix epoch when it began.

        Returns:
            ``(name, source)`` with source one of :data:`SOURCES`, or None
            when no answer counts (see the module docs for the rule).
        """
        latest = began + EARLY_SLACK_SECS
        with self._lock:
            names = self._seen.get((namespace, address), ())
            valid = [e for e in names if e.arrived <= latest and e.expires >= began]
            if valid:
                if pid is not None:
                    mine = [e for e in valid if e.client and self._owner(e) == pid]
                    if mine:
                        return max(reversed(mine), key=_arrival).name, "process"
                return max(reversed(valid), key=_arrival).name, "namespace"
            other = self._anywhere.get(address)
        if other is not None:
            where, entry = other
            if where != namespace and entry.arrived <= latest and entry.expires >= began:
                return entry.name, "host"
        return None


    def _owner(self, entry: _Seen) -> int | None:
        """Who owned the socket the answer went to when it came (the lock is held)."""
        owners = self._clients.get(entry.client) if entry.client else None
        if not owners:
            return None
        before = [pid for at, pid in owners if at <= entry.arrived + EARLY_SLACK_SECS]
        # A socket first seen after the answer (by a sample, say) is taken as its owner's.
        return before[-1] if before else owners[0][1]


def _prune(names: list[_Seen], cutoff: float) -> None:
    """Keep answers that arrived after ``cutoff``, and the latest of each name before;
    at most _PRUNED_TO, so that this runs once every few answers."""
    kept: list[_Seen] = []
    later: set[str] = set()
    for entry in reversed(names):
        if entry.arrived < cutoff and entry.name in later:
            continue
        later.add(entry.name)
        kept.append(entry)
        if len(kept) == _PRUNED_TO:
            break
    kept.reverse()
    names[:] = kept


def _arrival(entry: _Seen) -> float:
    return entry.arrived
