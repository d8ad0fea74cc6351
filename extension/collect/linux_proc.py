"""Linux collector: every network namespace once, via sock_diag and procfs.

This module reads the socket tables: it discovers the network namespaces
from ``/proc/<pid>/ns/net``, reads each one's TCP and UDP tables, parses
them and caches the parsed lines. Which process owns each socket is worked
out by :class:`extension.collect.owners.SocketOwners` (owners.py).

Our own network namespace (the host's, under osqueryd) is read over
NETLINK_SOCK_DIAG (netlink_diag.py) when the kernel allows it: for TCP that
costs a fraction of reading /proc/net/tcp{,6}, whose reader walks the whole
TCP hash table as text. When netlink fails for a table (no AF_NETLINK, EPERM
or EACCES in a sandboxed container, a kernel without the tcp_diag/udp_diag
handlers), that table is read from /proc/net instead, and netlink is tried
again after ``netlink_retry_secs``. Other namespaces are always read from
``/proc/<pid>/net/*``: a netlink socket only reports the namespace it was
created in, and creating one in another namespace needs ``setns(2)``, which
Python 3.11 does not offer (``os.setns`` is new in 3.12).

Sources of the facts used here:

* Linux proc(5): ``/proc/net/{tcp,tcp6,udp,udp6}`` list one socket per line
  as ``sl: local rem st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
  inode ...``; addresses are hex, each 32-bit word of the address printed in
  host byte order (little-endian on x86/arm64, so ``0100007F`` is
  127.0.0.1); ports are big hex numbers; ``st`` is the kernel's TCP state
  number (include/net/tcp_states.h). Kernel formatters:
  net/ipv4/tcp_ipv4.c ``get_tcp4_sock``, net/ipv6/tcp_ipv6.c
  ``get_tcp6_sock``, net/ipv4/udp.c ``udp4_format_sock``.
* ``/proc/<pid>/net/*`` shows the files of *that process's* network
  namespace, and ``/proc/<pid>/ns/net`` is a symlink ``net:[<inode>]``
  naming it (proc(5), namespaces(7)).
* osquery does the same per namespace: osquery/filesystem/linux/proc.cpp
  (table ``process_open_sockets``) reads ``/proc/<pid>/net/*`` once for
  each namespace (osquery 5.23 osquery/tables/networking/linux/
  process_open_sockets.cpp).
* psutil (psutil/_pslinux.py, ``NetConnections``) decodes the same files;
  the address byte order and state names here were checked against it and
  tests/extension/test_linux_proc.py compares both on live sockets.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from extension.collect.base import CollectError
from extension.collect.netlink_diag import (
    TCP_STATE_NAMES,
    TCP_STATES_MASK,
    TCP_TIME_WAIT,
    AddressMemo,
    DiagMiss,
    InetDiagReader,
    NetlinkError,
    decode_sockid,
    open_diag_socket,
)
from extension.collect.netns import (
    NetnsError,
    NetnsStuckError,
    enter_netns,
    nsfs_mounts,
    own_netns_fd,
)
from extension.collect.normalize import normalize_address
from extension.collect.owners import SocketOwners
from extension.collect.raw_sockets import (
    AF_PACKET,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    interface_names,
    parse_packet,
    parse_raw,
)
from extension.model import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = [
    "DEFAULT_NETLINK_RETRY_SECS",
    "TCP_STATES",
    "LinuxProcCollector",
    "decode_address",
    "parse_proc_net",
]

log = logging.getLogger(__name__)

DEFAULT_NETLINK_RETRY_SECS = 300.0
"""Seconds a table whose netlink dump failed is read from /proc before
netlink is tried again."""

TCP_STATES: dict[bytes, str] = {
    b"01": "ESTABLISHED",
    b"02": "SYN_SENT",
    b"03": "SYN_RECV",
    b"04": "FIN_WAIT1",
    b"05": "FIN_WAIT2",
    b"06": "TIME_WAIT",
    b"07": "CLOSE",
    b"08": "CLOSE_WAIT",
    b"09": "LAST_ACK",
    b"0A": "LISTEN",
    b"0B": "CLOSING",
}
"""Kernel TCP state number (2 hex digits, include/net/tcp_states.h) to the
name psutil reports (psutil/_pslinux.py ``TCP_STATUSES``)."""

_UNKNOWN_STATE = "UNKNOWN"
_LITTLE_ENDIAN = sys.byteorder == "little"
_ADDRESS_CACHE_LIMIT = 65536
_NETLINK_CACHE = "netlink:"
_INSIDE = "netns:"
"""Prefix of a reader that is a namespace file to enter, not a directory under /proc."""
"""Prefix of the cache key (ns, name) of a table read over netlink."""


@dataclass(frozen=True, slots=True)
class _Table:
    """One of the four /proc/net files.

    Attributes:
        name: file name under ``/proc/<pid>/net``.
        family: 2 or 10, before IPv4-mapped addresses are unmapped.
        protocol: 6 or 17.
        ident_end: offset, from the colon ending ``sl``, of the end of the
            ``local rem st`` text (fixed width: 2 + 13+1+13+1+2 for IPv4,
            2 + 37+1+37+1+2 for IPv6).
    """

    name: str
    family: int
    protocol: int
    ident_end: int
    kind: str = "inet"


_TABLES = (
    _Table("tcp", AF_INET, IPPROTO_TCP, 32),
    _Table("tcp6", AF_INET6, IPPROTO_TCP, 80),
    _Table("udp", AF_INET, IPPROTO_UDP, 32),
    _Table("udp6", AF_INET6, IPPROTO_UDP, 80),
)
_TABLE_BY_NAME = {t.name: t for t in _TABLES}
_OTHER_TABLES = (
    _Table("raw", AF_INET, 0, 0, "raw"),
    _Table("raw6", AF_INET6, 0, 0, "raw"),
    _Table("icmp", AF_INET, IPPROTO_ICMP, 0, "icmp"),
    _Table("icmp6", AF_INET6, IPPROTO_ICMPV6, 0, "icmp"),
    _Table("packet", AF_PACKET, 0, 0, "packet"),
    _Table("igmp", AF_INET, 0, 0, "igmp"),
)
"""Raw IP, ICMP and packet sockets (raw_sockets.py), and igmp for interface names."""

# A cache entry for one line of a /proc file: (inode token b" <inode> ",
# offset of the token from the line's first colon, the record built for it or
# None when the line yields no record); see LinuxProcCollector._parse. For a
# socket read over netlink the same shape holds (raw idiag_inode bytes,
# idiag_state, record), keyed by the sockid bytes; see netlink_diag.DiagEntry.
_Entry = tuple[bytes, int, SocketRecord | None]
_Cache = dict[bytes, _Entry]


def decode_address(hex_address: bytes) -> str:
    """Text form of an address as /proc/net/* prints it.

    Args:
        hex_address: 8 hex digits (IPv4) or 32 (IPv6); each 32-bit word is in
            host byte order, as the kernel prints it.

    Returns:
        the address as ``socket.inet_ntop`` writes it, e.g. ``'127.0.0.1'``,
        ``'::1'``, ``'::ffff:127.0.0.1'`` (not yet unmapped).

    Raises:
        ValueError: not 8 or 32 hex digits.
    """
    raw = bytes.fromhex(hex_address.decode("ascii"))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1] if _LITTLE_ENDIAN else raw)
    if len(raw) == 16:
        if _LITTLE_ENDIAN:
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise ValueError(f"not an IPv4 or IPv6 hex address: {hex_address!r}")


@dataclass(slots=True)
class _Line:
    """A /proc/net line or netlink message that missed the cache, parsed.

    Its record is built once owners are resolved. ``ident``, ``token`` and
    ``offset`` become the cache key and the first two entry fields: for
    /proc, the ``local rem st`` text, the inode token and its offset; for
    netlink, the sockid bytes, the raw inode bytes and the state number.
    """

    cache: _Cache
    ident: bytes
    token: bytes
    offset: int
    family: int
    protocol: int
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    inode: int
    net_namespace: int | None


class LinuxProcCollector:
    """Lists every TCP/UDP socket of every network namespace from /proc.

    Satisfies :class:`extension.collect.Collector`. Each ``collect()``:

    1. lists ``/proc``, reads every pid's ``ns/net`` link and groups pids by
       network namespace inode;
    2. reads the TCP and UDP sockets of our own namespace with four
       sock_diag netlink dumps (IPv4/IPv6 x TCP/UDP), or for each dump that
       fails, ``/proc/self/net/{tcp,tcp6,udp,udp6}``; reads the files of every
       other namespace once through one live pid (another pid of the
       namespace if that one exits before its files are open); every record
       gets that ``net_namespace``;
    3. hands the listed socket inodes, and which of them are new, to a
       :class:`extension.collect.owners.SocketOwners`, which keeps socket
       inode -> owner pid up to date from ``/proc/<pid>/fd``: full fd scans
       on the first call and every ``rescan_after`` seconds, targeted scans
       for new sockets in between. The owner of a socket held by several
       processes is the one with the earliest start time, ties to the lowest
       pid; sockets without a readable holder get ``pid=None``. The owner
       rule, the scans and the limits of fd passing are documented in
       extension/collect/owners.py.

    Unparsed lines are cached per namespace and file, keyed by the
    ``local rem st`` text and checked against the inode field, so an
    unchanged socket costs a slice, a dict lookup and a ``startswith``.
    Netlink messages are cached per table, keyed by the 48-byte sockid
    (ports, addresses, interface, socket cookie) and checked against the
    inode and state, so an unchanged socket costs one ``unpack_from``, a
    dict lookup and two comparisons.

    Netlink and /proc give the same records for our namespace
    (tests/extension/test_netlink_diag.py compares both, and psutil, on live
    sockets). Neither is an atomic snapshot: a socket opened or closed while
    the kernel produces the list may be missing or still present.

    Sockets whose ``local rem st`` text is identical (SO_REUSEPORT groups of
    unconnected UDP sockets or listeners) share one cache slot, so all but one
    of them are re-parsed on every call: correct, slightly slower.

    Not thread-safe: one ``collect()`` at a time (the table serialises calls).

    Like :class:`extension.collect.PsutilCollector`, a socket whose local
    port is 0 yields no record, and a remote end with port 0 is reported as
    ``('', 0)``.

    Args:
        proc_root: procfs mount point (a fake tree in tests).
        rescan_after: seconds between forced full fd scans; None never forces.
        clock: monotonic seconds (injectable for tests).

    Keyword-only args:
        netlink: read our own namespace over sock_diag netlink; None (the
            default) means yes when ``proc_root`` is ``/proc`` on Linux (a
            fake tree describes sockets netlink cannot see).
        diag_socket_factory: opens the netlink socket (the seam tests use to
            make netlink fail); default
            :func:`extension.collect.netlink_diag.open_diag_socket`.
        netlink_retry_secs: seconds a table stays on /proc after its netlink
            dump failed.

    Attributes:
        fd_scans: number of full fd scans done so far (every pid's fd
            directory read); read-only, from :class:`SocketOwners`.
        targeted_scans: number of targeted scans so far (searches for the
            holders of new sockets); read-only, from :class:`SocketOwners`.
        pids_scanned: number of ``/proc/<pid>/fd`` directories read so far, by
            full and incremental scans together; read-only, from
            :class:`SocketOwners`.
        access_denied_pids: live pids whose fd directory could not be read
            (PermissionError, i.e. not root) in the last call; their sockets
            get ``pid=None``; read-only, from :class:`SocketOwners`.
        access_denied_namespaces: pids whose ``ns/net`` link could not be
            read in the last call; namespaces only they are in are not seen.
        netlink_tables: names (``'tcp'``, ``'tcp6'``, ``'udp'``, ``'udp6'``)
            of the tables of our namespace read over netlink in the last
            call; the others were read from /proc.
        netlink_failures: netlink dumps that failed so far.
        netlink_error: the last netlink failure, '' when none.
        skip_time_wait: leave TIME_WAIT sockets of our own namespace out of
            the netlink dumps (the kernel filters them); the /proc path
            lists them regardless. The sampler sets it for most samples.
        time_wait_unlisted: the namespace whose TIME_WAIT sockets the last
            call left out (a dump filtered by ``skip_time_wait``), else None.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        rescan_after: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        netlink: bool | None = None,
        diag_socket_factory: Callable[[], socket.socket] | None = None,
        netlink_retry_secs: float = DEFAULT_NETLINK_RETRY_SECS,
    ) -> None:
        self._root = proc_root.rstrip("/") or "/"
        if netlink is None:
            netlink = self._root == "/proc" and sys.platform.startswith("linux")
        self._netlink = netlink
        self._diag = InetDiagReader(diag_socket_factory or open_diag_socket)
        self._netlink_retry_secs = netlink_retry_secs
        self._netlink_retry_at: dict[str, float] = {}
        self._prune_later: list[_Cache] = []
        self._raw_addresses = AddressMemo()
        self.netlink_tables: tuple[str, ...] = ()
        self.netlink_failures = 0
        self.netlink_error = ""
        self.skip_time_wait = False
        self.time_wait_unlisted: int | None = None
        self.unlisted_namespaces = 0
        self._enter = self._root == "/proc" and sys.platform.startswith("linux")
        self._home_fd: int | None = None
        self._foreign_mounts: dict[int, str] = {}
        self._mounts_scan = -1
        self._clock = clock
        self._owners = SocketOwners(self._root, rescan_after, clock)
        self.access_denied_namespaces = 0
        self._caches: dict[tuple[int, str], _Cache] = {}
        self._where: dict[int, tuple[_Cache, bytes]] = {}
        self._addresses: dict[bytes, tuple[int, str]] = {}

    # ------------------------------------------------------------------ API

    @property
    def fd_scans(self) -> int:
        """Full fd scans done so far (see :attr:`SocketOwners.fd_scans`)."""
        return self._owners.fd_scans

    @property
    def targeted_scans(self) -> int:
        """Targeted fd scans done so far (see :attr:`SocketOwners.targeted_scans`)."""
        return self._owners.targeted_scans

    @property
    def pids_scanned(self) -> int:
        """``/proc/<pid>/fd`` directories read so far (see :attr:`SocketOwners.pids_scanned`)."""
        return self._owners.pids_scanned

    def holders(self, inode: int) -> list[int]:
        """Every pid holding socket ``inode`` (see :meth:`SocketOwners.holders`)."""
        return self._owners.holders(inode)

    @property
    def access_denied_pids(self) -> int:
        """Live pids whose fd directory was unreadable in the last call.

        See :attr:`SocketOwners.access_denied_pids`.
        """
        return self._owners.access_denied_pids

    def collect(self) -> list[SocketRecord]:
        """Return every TCP/UDP socket of every readable network namespace.

        Returns:
            list of SocketRecord (``socket`` and ``net_namespace`` set), in no
            particular order.

        Raises:
            CollectError: /proc cannot be listed, our own namespace can be
                read neither over netlink nor from its files, or a line is
                malformed. No partial list is returned.
        """
        self.time_wait_unlisted = None
        pids, namespaces = self._list_namespaces()
        records: list[SocketRecord] = []
        misses: list[_Line] = []
        seen_caches: set[tuple[int, str]] = set()
        self._prune_later = []
        others: list[tuple[int, dict[str, bytes]]] = []
        for index, (ns, readers) in enumerate(namespaces):
            tables: tuple[_Table, ...] = _TABLES
            if index == 0:  # our own namespace
                tables = self._read_netlink(ns, records, misses, seen_caches)
            blobs = self._read_namespace(ns, readers, tables + _OTHER_TABLES)
            if blobs is None:
                continue
            other: dict[str, bytes] = {}
            for table, data in blobs:
                if table.kind != "inet":
                    other[table.name] = data
                    continue
                key = (ns, table.name)
                seen_caches.add(key)
                cache = self._caches.get(key)
                if cache is None:
                    cache = self._caches[key] = {}
                self._parse(data, table, ns, cache, out=records, misses=misses)
            if other:
                others.append((ns, other))
        for key in [k for k in self._caches if k not in seen_caches]:
            self._drop_cache(self._caches.pop(key))
        owners = self._owners
        unowned = self._other_sockets(others, namespaces[0][0])
        new = {m.inode for m in misses if m.inode} | {r.socket for r in unowned if r.socket}
        changed = owners.update(pids, [*records, *unowned], new)
        if changed is None or changed:
            self._fix_owners(records, changed)
        self._finish_misses(misses, records, owners.owner)
        records.extend(replace(r, pid=owners.owner(r.socket or 0)) for r in unowned)
        if self._prune_later:
            self._prune_netlink_caches(records)
        return records

    # ------------------------------------------------------- namespaces, I/O

    def _list_namespaces(self) -> tuple[set[int], list[tuple[int, list[str]]]]:
        """List pids and group them by network namespace.

        Returns:
            (live pids, [(namespace inode, reader dirs)]): our own namespace
            first with reader ``self``; every other namespace with its pids,
            lowest first.

        Raises:
            CollectError: /proc cannot be listed or our own ns link read.
        """
        root = self._root
        try:
            names = os.listdir(root)
        except OSError as err:
            raise CollectError(f"cannot list {root}: {err}") from err
        try:
            own = _ns_inode(os.readlink(f"{root}/self/ns/net"))
        except (OSError, ValueError) as err:
            raise CollectError(f"cannot read {root}/self/ns/net: {err}") from err
        pids: set[int] = set()
        groups: dict[int, list[int]] = {}
        denied = 0
        for name in names:
            if not name.isdigit():
                continue
            pid = int(name)
            pids.add(pid)
            try:
                ns = _ns_inode(os.readlink(f"{root}/{name}/ns/net"))
            except PermissionError:
                denied += 1
                continue
            except (OSError, ValueError):
                continue  # exited, or a zombie (no namespaces any more)
            if ns != own:
                groups.setdefault(ns, []).append(pid)
        self.access_denied_namespaces = denied
        ordered: list[tuple[int, list[str]]] = [(own, ["self"])]
        for ns in sorted(groups):
            ordered.append((ns, [str(p) for p in sorted(groups[ns])]))
        if self._enter:
            unlisted = self._unlisted_namespaces(own, groups, names)
            self.unlisted_namespaces = len(unlisted)
            for ns in sorted(unlisted):
                ordered.append((ns, [_INSIDE + path for path in unlisted[ns]]))
        return pids, ordered

    def _unlisted_namespaces(
        self, own: int, groups: dict[int, list[int]], names: list[str]
    ) -> dict[int, list[str]]:
        """Network namespaces no process is in, with the files that enter them.

        Found through nsfs mounts (our mount namespace's at every call, the
        other mount namespaces' once per full fd scan) and through namespace
        descriptors that processes hold (seen by the owner scans).

        Returns:
            namespace inode -> paths of its nsfs file, best first.
        """
        found: dict[int, list[str]] = {}
        root = self._root
        for ns, mount in nsfs_mounts(f"{root}/self/mountinfo").items():
            found.setdefault(ns, []).append(mount)
        if self._owners.fd_scans != self._mounts_scan:
            self._mounts_scan = self._owners.fd_scans
            self._foreign_mounts = self._other_mount_namespaces(names)
        for ns, path in self._foreign_mounts.items():
            found.setdefault(ns, []).append(path)
        for ns, (pid, fd) in self._owners.held_namespaces().items():
            found.setdefault(ns, []).append(f"{root}/{pid}/fd/{fd}")
        return {ns: paths for ns, paths in found.items() if ns != own and ns not in groups}

    def _other_mount_namespaces(self, names: list[str]) -> dict[int, str]:
        """nsfs mounts of the mount namespaces other than ours (containers)."""
        root = self._root
        try:
            own = os.readlink(f"{root}/self/ns/mnt")
        except OSError:
            return {}
        seen = {own}
        found: dict[int, str] = {}
        for name in names:
            if not name.isdigit():
                continue
            try:
                mnt = os.readlink(f"{root}/{name}/ns/mnt")
            except OSError:
                continue
            if mnt in seen:
                continue
            seen.add(mnt)
            for ns, mount in nsfs_mounts(f"{root}/{name}/mountinfo").items():
                found.setdefault(ns, f"{root}/{name}/root{mount}")
        return found

    def _read_netlink(
        self,
        ns: int,
        records: list[SocketRecord],
        misses: list[_Line],
        seen_caches: set[tuple[int, str]],
    ) -> tuple[_Table, ...]:
        """Dump our own namespace's tables over netlink, where that works.

        Args:
            ns: our namespace inode.
            records: receives the records of cached sockets.
            misses: receives the sockets that missed the cache.
            seen_caches: receives the cache keys used.

        Returns:
            the tables still to read from /proc: all when netlink is off,
            those whose dump failed now or recently.
        """
        if not self._netlink:
            self.netlink_tables = ()
            return _TABLES
        now = self._clock()
        rest: list[_Table] = []
        used: list[str] = []
        for table in _TABLES:
            retry_at = self._netlink_retry_at.get(table.name)
            if retry_at is not None and now < retry_at:
                rest.append(table)
                continue
            key = (ns, _NETLINK_CACHE + table.name)
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = {}
            mark = len(records)
            raw: list[DiagMiss] = []
            states = None
            if self.skip_time_wait and table.protocol == IPPROTO_TCP:
                states = TCP_STATES_MASK & ~(1 << TCP_TIME_WAIT)
            try:
                count = self._diag.dump(
                    table.family, table.protocol, cache, records, raw, states=states
                )
            except NetlinkError as err:
                del records[mark:]
                self._netlink_failed(table, err, now)
                rest.append(table)
                continue
            self._netlink_retry_at.pop(table.name, None)
            seen_caches.add(key)
            used.append(table.name)
            for miss in raw:
                misses.append(self._diag_line(table, ns, cache, miss))
            if states is not None:
                # The TIME_WAIT entries stay cached for the next full dump.
                self.time_wait_unlisted = ns
            elif len(cache) > 2 * count + 512:
                self._prune_later.append(cache)
        self.netlink_tables = tuple(used)
        return tuple(rest)

    def _netlink_failed(self, table: _Table, err: NetlinkError, now: float) -> None:
        self.netlink_failures += 1
        self.netlink_error = f"{table.name}: {err}"
        self._netlink_retry_at[table.name] = now + self._netlink_retry_secs
        log.warning(
            "sock_diag netlink dump of %s failed (%s); reading %s/self/net/%s instead,"
            " netlink is retried in %g s",
            table.name,
            err,
            self._root,
            table.name,
            self._netlink_retry_secs,
        )

    def _diag_line(self, table: _Table, ns: int, cache: _Cache, miss: DiagMiss) -> _Line:
        """Decode a netlink socket message that missed the cache."""
        sockid, state, inode = miss
        local, local_port, remote, remote_port = decode_sockid(table.family, sockid)
        family, local_address = self._raw_addresses.get(local)
        tcp = table.protocol == IPPROTO_TCP
        return _Line(
            cache=cache,
            ident=sockid,
            token=inode,
            offset=state,
            family=family,
            protocol=table.protocol,
            local_address=local_address,
            local_port=local_port,
            remote_address=self._raw_addresses.get(remote)[1] if remote_port else "",
            remote_port=remote_port,
            state=TCP_STATE_NAMES.get(state, _UNKNOWN_STATE) if tcp else "",
            inode=int.from_bytes(inode, sys.byteorder),
            net_namespace=ns,
        )

    def _read_namespace(
        self, ns: int, readers: list[str], tables: tuple[_Table, ...] = _TABLES
    ) -> list[tuple[_Table, bytes]] | None:
        """Read the files of one namespace through the first live reader.

        Args:
            ns: namespace inode.
            readers: directories under the proc root (``self`` or pids) whose
                ``net/`` shows that namespace, tried in order.
            tables: the files to read.

        Returns:
            [(table, file bytes)] (tcp6/udp6 left out where IPv6 is off), or
            None when every reader of a foreign namespace exited.

        Raises:
            CollectError: our own namespace (reader ``self``) is unreadable.
        """
        last_error: Exception | None = None
        for reader in readers:
            try:
                if reader.startswith(_INSIDE):
                    blobs = self._read_inside(reader[len(_INSIDE) :], ns, tables)
                else:
                    blobs = self._read_files(f"{self._root}/{reader}", ns, tables)
            except (OSError, ValueError, NetnsError) as err:
                last_error = err
                continue
            if blobs is not None:
                return blobs
        if readers == ["self"]:
            raise CollectError(f"cannot read {self._root}/self/net: {last_error}")
        return None

    def _other_sockets(
        self, others: list[tuple[int, dict[str, bytes]]], own: int
    ) -> list[SocketRecord]:
        """Raw IP, ICMP and packet sockets of each namespace, owners not yet known."""
        out: list[SocketRecord] = []
        for ns, files in others:
            for name in ("raw", "raw6", "icmp", "icmp6"):
                data = files.get(name)
                if not data:
                    continue
                table_family = AF_INET6 if name.endswith("6") else AF_INET
                ping = name.startswith("icmp")
                for sock in parse_raw(data):
                    family, local = self._address(sock.local, table_family)
                    remote = ""
                    if sock.remote.strip(b"0"):
                        remote = self._address(sock.remote, table_family)[1]
                    if ping:
                        protocol = IPPROTO_ICMP if table_family == AF_INET else IPPROTO_ICMPV6
                    else:
                        protocol = sock.number
                    out.append(SocketRecord(
                        None, family, protocol, local, sock.number if ping else 0, remote,
                        sock.remote_number if ping and remote else 0, "", sock.inode, ns,
                    ))  # fmt: skip
            packets = parse_packet(files.get("packet", b""))
            if packets:
                name_of = interface_names(files.get("igmp"), ns == own)
                for packet in packets:
                    out.append(SocketRecord(
                        None, AF_PACKET, packet.ethertype, "", 0, "", 0, "", packet.inode, ns,
                        interface=name_of(packet.ifindex) if packet.ifindex else "",
                    ))  # fmt: skip
        return out

    def _read_inside(
        self, path: str, ns: int, tables: tuple[_Table, ...]
    ) -> list[tuple[_Table, bytes]] | None:
        """Enter the namespace at ``path`` with this thread, read its files, come back.

        ``/proc/thread-self/net/*`` show the reading thread's namespace.

        Raises:
            NetnsError: the namespace could not be entered.
            CollectError: this thread could not return to its own namespace.
        """
        if self._home_fd is None:
            self._home_fd = own_netns_fd(self._root)
        try:
            with enter_netns(path, self._home_fd):
                return self._read_files(f"{self._root}/thread-self", ns, tables)
        except NetnsStuckError as err:
            self._enter = False
            raise CollectError(str(err)) from err

    @staticmethod
    def _read_files(
        base: str, ns: int, tables: tuple[_Table, ...]
    ) -> list[tuple[_Table, bytes]] | None:
        """Open the files under ``base/net``, check the namespace, read.

        The files are opened first and the ns link read after: an open procfs
        file keeps the namespace it was opened in, so an unchanged link means
        the data belongs to ``ns`` even if the process exits while we read.

        Returns:
            [(table, bytes)], or None when ``base`` is now in another namespace.

        Raises:
            OSError: the process is gone (or tcp/udp missing).
            ValueError: the ns link is not a network namespace link.
        """
        files = []
        try:
            for table in tables:
                try:
                    files.append((table, open(f"{base}/net/{table.name}", "rb", 0)))  # noqa: SIM115
                except FileNotFoundError:
                    if table.family == AF_INET and table.kind == "inet":
                        raise
            if _ns_inode(os.readlink(f"{base}/ns/net")) != ns:
                return None
            return [(table, f.read()) for table, f in files]
        finally:
            for _, f in files:
                f.close()

    # ------------------------------------------------------------- parsing

    def _parse(
        self,
        data: bytes,
        table: _Table,
        ns: int | None,
        cache: _Cache,
        *,
        out: list[SocketRecord],
        misses: list[_Line],
    ) -> None:
        """Turn one file into records, from the cache where the line is known.

        Hits are appended to ``out``; other lines are parsed into ``misses``
        (their records are built once owners are resolved).

        Raises:
            CollectError: a line is malformed.
        """
        lines = data.split(b"\n")
        end = table.ident_end
        get = cache.get
        append = out.append
        slow: list[bytes] = []
        for line in lines[1:]:
            colon = line.find(b":")
            if colon < 0:
                continue
            entry = get(line[colon + 2 : colon + end])
            if entry is not None and line.startswith(entry[0], colon + entry[1]):
                record = entry[2]
                if record is not None:
                    append(record)
            else:
                slow.append(line)
        for line in slow:
            misses.append(self._parse_line(line, table, ns, cache))
        if len(cache) > 2 * len(lines) + 512:
            self._prune_cache(cache, lines, end)

    def _parse_line(self, line: bytes, table: _Table, ns: int | None, cache: _Cache) -> _Line:
        """Parse one line fully (the slow path).

        Raises:
            CollectError: the line does not have the proc(5) layout.
        """
        try:
            fields = line.split()
            local, remote, st = fields[1], fields[2], fields[3]
            timeout, inode = fields[8], fields[9]
            colon = line.index(b":")
            token = b" " + inode + b" "
            at = line.find(b" " + timeout + token, colon + table.ident_end)
            if at < 0:
                raise ValueError("inode field not found")
            local_hex, _, local_port = local.partition(b":")
            remote_hex, _, remote_port = remote.partition(b":")
            family, local_address = self._address(local_hex, table.family)
            rport = int(remote_port, 16)
            remote_address = self._address(remote_hex, table.family)[1] if rport else ""
            state = TCP_STATES.get(st, _UNKNOWN_STATE) if table.protocol == IPPROTO_TCP else ""
            return _Line(
                cache=cache,
                ident=line[colon + 2 : colon + table.ident_end],
                token=token,
                offset=at + len(timeout) + 1 - colon,
                family=family,
                protocol=table.protocol,
                local_address=local_address,
                local_port=int(local_port, 16),
                remote_address=remote_address,
                remote_port=rport,
                state=state,
                inode=int(inode),
                net_namespace=ns,
            )
        except (IndexError, ValueError, UnicodeDecodeError) as err:
            raise CollectError(f"malformed /proc/net/{table.name} line {line!r}: {err}") from err

    def _address(self, hex_address: bytes, family: int) -> tuple[int, str]:
        """(family, text) of a hex address, IPv4-mapped unmapped; memoised."""
        known = self._addresses.get(hex_address)
        if known is None:
            if len(self._addresses) >= _ADDRESS_CACHE_LIMIT:
                self._addresses.clear()
            known = normalize_address(family, decode_address(hex_address))
            self._addresses[hex_address] = known
        return known

    def _prune_cache(self, cache: _Cache, lines: list[bytes], end: int) -> None:
        """Keep only the cache entries of lines still in the file."""
        live: _Cache = {}
        for line in lines[1:]:
            colon = line.find(b":")
            if colon >= 0:
                ident = line[colon + 2 : colon + end]
                entry = cache.get(ident)
                if entry is not None:
                    live[ident] = entry
        self._replace_cache(cache, live)

    def _prune_netlink_caches(self, records: list[SocketRecord]) -> None:
        """Keep only the netlink cache entries whose record was listed now."""
        alive = {id(r) for r in records}
        for cache in self._prune_later:
            live = {k: e for k, e in cache.items() if e[2] is not None and id(e[2]) in alive}
            self._replace_cache(cache, live)
        self._prune_later.clear()

    def _replace_cache(self, cache: _Cache, live: _Cache) -> None:
        """Make ``live`` the content of ``cache``, keeping ``_where`` right."""
        self._drop_cache(cache)
        cache.clear()
        cache.update(live)
        for ident, (_, _, record) in live.items():
            if record is not None and record.socket:
                self._where[record.socket] = (cache, ident)

    def _drop_cache(self, cache: _Cache) -> None:
        for _, _, record in cache.values():
            if record is not None and record.socket:
                where = self._where.get(record.socket)
                if where is not None and where[0] is cache:
                    del self._where[record.socket]

    def _finish_misses(
        self,
        misses: list[_Line],
        out: list[SocketRecord],
        owner: Callable[[int], int | None],
    ) -> None:
        """Build records for the lines that missed the cache, and cache them.

        Args:
            misses: lines parsed in this call.
            out: receives the records (lines with a non-zero local port).
            owner: socket inode -> owner pid or None.
        """
        where = self._where
        for m in misses:
            record: SocketRecord | None = None
            if m.local_port:
                record = SocketRecord(
                    pid=owner(m.inode) if m.inode else None,
                    family=m.family,
                    protocol=m.protocol,
                    local_address=m.local_address,
                    local_port=m.local_port,
                    remote_address=m.remote_address,
                    remote_port=m.remote_port,
                    state=m.state,
                    socket=m.inode,
                    net_namespace=m.net_namespace,
                )
                out.append(record)
            old = m.cache.get(m.ident)
            stale = old[2].socket if old is not None and old[2] is not None else None
            if stale and where.get(stale, (None, b""))[0] is m.cache:
                del where[stale]
            m.cache[m.ident] = (m.token, m.offset, record)
            if m.inode:
                where[m.inode] = (m.cache, m.ident)

    def _fix_owners(self, records: list[SocketRecord], changed: set[int] | None) -> None:
        """Re-point cached records whose owner changed (``None``: check all)."""
        owner = self._owners.owner
        for i, record in enumerate(records):
            inode = record.socket
            if not inode or (changed is not None and inode not in changed):
                continue
            pid = owner(inode)
            if pid == record.pid:
                continue
            fixed = SocketRecord(
                pid=pid,
                family=record.family,
                protocol=record.protocol,
                local_address=record.local_address,
                local_port=record.local_port,
                remote_address=record.remote_address,
                remote_port=record.remote_port,
                state=record.state,
                socket=record.socket,
                net_namespace=record.net_namespace,
            )
            records[i] = fixed
            where = self._where.get(inode)
            if where is not None:
                cache, ident = where
                entry = cache.get(ident)
                if entry is not None and entry[2] is record:
                    cache[ident] = (entry[0], entry[1], fixed)


def _ns_inode(link: str) -> int:
    """Inode of a ``net:[NNN]`` namespace link.

    Raises:
        ValueError: not such a link.
    """
    if not link.startswith("net:[") or not link.endswith("]"):
        raise ValueError(f"not a network namespace link: {link!r}")
    return int(link[5:-1])


def parse_proc_net(
    data: bytes,
    table: str,
    owners: dict[int, int] | None = None,
    net_namespace: int | None = None,
) -> list[SocketRecord]:
    """Parse the text of one /proc/net file (for recorded data and tools).

    Args:
        data: the whole file, header line included.
        table: ``'tcp'``, ``'tcp6'``, ``'udp'`` or ``'udp6'``.
        owners: socket inode -> pid; inodes not in it get ``pid=None``.
        net_namespace: value for every record's ``net_namespace``.

    Returns:
        one SocketRecord per line with a non-zero local port, in file order.

    Raises:
        CollectError: a line is malformed.
        KeyError: unknown ``table``.
    """
    spec = _TABLE_BY_NAME[table]
    parser = LinuxProcCollector()
    cache: _Cache = {}
    misses: list[_Line] = []
    records: list[SocketRecord] = []
    parser._parse(data, spec, net_namespace, cache, out=records, misses=misses)
    parser._finish_misses(misses, records, (owners or {}).get)
    return records
