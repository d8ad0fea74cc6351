"""Linux collector that reads procfs directly, every network namespace once.

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
  namespace, ``/proc/<pid>/ns/net`` is a symlink ``net:[<inode>]`` naming
  it, and ``/proc/<pid>/fd/<n>`` links of sockets read ``socket:[<inode>]``
  (proc(5), namespaces(7)).
* osquery does the same per namespace: osquery/filesystem/linux/proc.cpp
  reads ``/proc/<pid>/net/*`` for each namespace and maps socket inodes to
  pids from ``/proc/<pid>/fd`` (see osquery-protocol-and-logs.md).
* psutil (psutil/_pslinux.py, ``NetConnections``) decodes the same files;
  the address byte order and state names here were checked against it and
  tests/extension/test_linux_proc.py compares both on live sockets.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from extension.collect.base import CollectError
from extension.collect.normalize import normalize_address
from extension.model import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = ["TCP_STATES", "LinuxProcCollector", "decode_address", "parse_proc_net"]

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
_SOCKET_LINK = "socket:["


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


_TABLES = (
    _Table("tcp", AF_INET, IPPROTO_TCP, 32),
    _Table("tcp6", AF_INET6, IPPROTO_TCP, 80),
    _Table("udp", AF_INET, IPPROTO_UDP, 32),
    _Table("udp6", AF_INET6, IPPROTO_UDP, 80),
)
_TABLE_BY_NAME = {t.name: t for t in _TABLES}

# A cache entry for one line: (inode token b" <inode> ", offset of the token
# from the line's first colon, the record built for it or None when the line
# yields no record). See LinuxProcCollector._parse.
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
    """A /proc/net line that missed the cache, parsed; its record comes later."""

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


@dataclass(slots=True)
class _Holdings:
    """What one process holds: its start time and its inet socket fds.

    Attributes:
        start: start time, clock ticks since boot (/proc/<pid>/stat field 22).
        sockets: socket inode -> fd number.
    """

    start: int
    sockets: dict[int, int] = field(default_factory=dict)


class LinuxProcCollector:
    """Lists every TCP/UDP socket of every network namespace from /proc.

    Satisfies :class:`extension.collect.Collector`. Each ``collect()``:

    1. lists ``/proc``, reads every pid's ``ns/net`` link and groups pids by
       network namespace inode;
    2. reads ``net/{tcp,tcp6,udp,udp6}`` once per namespace, through
       ``/proc/self`` for our own namespace and through one live pid for each
       other (another pid of the namespace if that one exits before its files
       are open); every record gets that ``net_namespace``;
    3. resolves socket inode -> pid incrementally (below).

    Ownership: a socket inode may be held by several processes (fork,
    pre-fork servers, fd passing). The owner reported is the holder with the
    **earliest start time, ties to the lowest pid** -- the process that
    created or inherited it first (the master of a pre-fork server), which
    does not flap as workers come and go. Sockets without an owner (inode 0:
    TIME_WAIT, SYN_RECV requests, orphans) and sockets whose holders cannot
    be read get ``pid=None``.

    Incremental resolution, per call:

    * pids that exited are dropped from the holder map; pids already known to
      hold inet sockets have their start time re-read (a reused pid is
      rescanned); pids that appeared since the last call have their
      ``/proc/<pid>/fd`` scanned (a fork child inherits its parent's sockets);
    * for sockets known to be held by several pids, the chosen owner's fd
      link is re-read (one readlink each), so a socket whose creator closed
      its copy moves to the next holder;
    * a full scan of every ``/proc/<pid>/fd`` happens on the first call, when
      a socket inode appears that no known pid holds (and that the last full
      scan did not already find ownerless), and every ``rescan_after``
      seconds.

    Known limit: a socket handed to an already-running process by fd passing
    (SCM_RIGHTS, pidfd_getfd) whose sender then closes it keeps the sender as
    owner until the next full scan.

    Unparsed lines are cached per namespace and file, keyed by the
    ``local rem st`` text and checked against the inode field, so an
    unchanged socket costs a slice, a dict lookup and a ``startswith``.

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

    Attributes:
        fd_scans: number of full fd scans done so far (every pid's fd
            directory read).
        pids_scanned: number of ``/proc/<pid>/fd`` directories read so far, by
            full and incremental scans together.
        access_denied_pids: live pids whose fd directory could not be read
            (PermissionError, i.e. not root); their sockets get ``pid=None``.
        access_denied_namespaces: pids whose ``ns/net`` link could not be
            read in the last call; namespaces only they are in are not seen.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        rescan_after: float | None = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = proc_root.rstrip("/") or "/"
        self._rescan_after = rescan_after
        self._clock = clock
        self.fd_scans = 0
        self.pids_scanned = 0
        self.access_denied_pids = 0
        self.access_denied_namespaces = 0
        self._last_full_scan: float | None = None
        self._known_pids: set[int] = set()
        self._denied: set[int] = set()
        self._holdings: dict[int, _Holdings] = {}
        self._holders: dict[int, list[int]] = {}
        self._shared: set[int] = set()
        self._ownerless: set[int] = set()
        self._inet_inodes: set[int] = set()
        self._caches: dict[tuple[int, str], _Cache] = {}
        self._where: dict[int, tuple[_Cache, bytes]] = {}
        self._addresses: dict[bytes, tuple[int, str]] = {}

    # ------------------------------------------------------------------ API

    def collect(self) -> list[SocketRecord]:
        """Return every TCP/UDP socket of every readable network namespace.

        Returns:
            list of SocketRecord (``socket`` and ``net_namespace`` set), in no
            particular order.

        Raises:
            CollectError: /proc cannot be listed, our own namespace's files
                cannot be read, or a line is malformed. No partial list is
                returned.
        """
        pids, namespaces = self._list_namespaces()
        records: list[SocketRecord] = []
        misses: list[_Line] = []
        seen_caches: set[tuple[int, str]] = set()
        for ns, readers in namespaces:
            blobs = self._read_namespace(ns, readers)
            if blobs is None:
                continue
            for table, data in blobs:
                key = (ns, table.name)
                seen_caches.add(key)
                cache = self._caches.get(key)
                if cache is None:
                    cache = self._caches[key] = {}
                self._parse(data, table, ns, cache, out=records, misses=misses)
        for key in [k for k in self._caches if k not in seen_caches]:
            self._drop_cache(self._caches.pop(key))
        changed, full = self._resolve(pids, records, misses)
        if changed or full:
            self._fix_owners(records, None if full else changed)
        self._finish_misses(misses, records)
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
        return pids, ordered

    def _read_namespace(self, ns: int, readers: list[str]) -> list[tuple[_Table, bytes]] | None:
        """Read the four files of one namespace through the first live reader.

        Args:
            ns: namespace inode.
            readers: directories under the proc root (``self`` or pids) whose
                ``net/`` shows that namespace, tried in order.

        Returns:
            [(table, file bytes)] (tcp6/udp6 left out where IPv6 is off), or
            None when every reader of a foreign namespace exited.

        Raises:
            CollectError: our own namespace (reader ``self``) is unreadable.
        """
        last_error: Exception | None = None
        for reader in readers:
            try:
                blobs = self._read_files(f"{self._root}/{reader}", ns)
            except (OSError, ValueError) as err:
                last_error = err
                continue
            if blobs is not None:
                return blobs
        if readers == ["self"]:
            raise CollectError(f"cannot read {self._root}/self/net: {last_error}")
        return None

    @staticmethod
    def _read_files(base: str, ns: int) -> list[tuple[_Table, bytes]] | None:
        """Open the four files under ``base/net``, check the namespace, read.

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
            for table in _TABLES:
                try:
                    files.append((table, open(f"{base}/net/{table.name}", "rb", 0)))  # noqa: SIM115
                except FileNotFoundError:
                    if table.family == AF_INET:
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

    def _finish_misses(self, misses: list[_Line], out: list[SocketRecord]) -> None:
        """Build records for the lines that missed the cache, and cache them."""
        holders = self._holders
        where = self._where
        for m in misses:
            record: SocketRecord | None = None
            if m.local_port:
                owners = holders.get(m.inode) if m.inode else None
                record = SocketRecord(
                    pid=owners[0] if owners else None,
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
        holders = self._holders
        for i, record in enumerate(records):
            inode = record.socket
            if not inode or (changed is not None and inode not in changed):
                continue
            owners = holders.get(inode)
            pid = owners[0] if owners else None
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

    # -------------------------------------------------- owner resolution

    def _resolve(
        self, pids: set[int], records: list[SocketRecord], misses: list[_Line]
    ) -> tuple[set[int], bool]:
        """Bring the inode -> holders map up to date for this sample.

        Args:
            pids: pids listed at the start of this call.
            records: records built from the cache (their inodes are known).
            misses: lines parsed this call, records not built yet.

        Returns:
            (inodes whose holder list changed, whether a full scan was done;
            after a full scan every record must be re-checked).
        """
        changed: set[int] = set()
        miss_inodes = {m.inode for m in misses if m.inode}
        self._inet_inodes |= miss_inodes
        now = self._clock()
        full = self._last_full_scan is None or (
            self._rescan_after is not None and now - self._last_full_scan >= self._rescan_after
        )
        if not full:
            for pid in self._known_pids - pids:
                self._forget_pid(pid, changed)
            fresh = pids - self._known_pids
            for pid, holding in list(self._holdings.items()):
                if pid not in fresh and _start_time(self._root, pid) != holding.start:
                    self._forget_pid(pid, changed)  # exited, or the pid was reused
                    fresh.add(pid)
            for pid in sorted(fresh):
                self._scan_pid(pid, self._inet_inodes, changed)
            self._verify_shared(changed)
            holders = self._holders
            ownerless = self._ownerless
            unknown = {i for i in miss_inodes if i not in holders and i not in ownerless}
            orphaned = {i for i in changed if i not in holders and i not in ownerless}
            if orphaned - miss_inodes:
                # Every known holder of a listed socket let go of it, yet the
                # socket is still listed: someone else holds it.
                current = {r.socket for r in records if r.socket}
                unknown |= orphaned & current
            full = bool(unknown)
        self._known_pids = pids
        if full:
            current = {r.socket for r in records if r.socket} | miss_inodes
            self._full_scan(pids, current)
            self._last_full_scan = now
        self._denied &= pids
        self.access_denied_pids = len(self._denied)
        return changed, full

    def _full_scan(self, pids: set[int], current: set[int]) -> None:
        """Rebuild the holder map from every pid's fd directory."""
        self.fd_scans += 1
        self._holdings.clear()
        self._holders.clear()
        self._shared.clear()
        self._denied.clear()
        self._inet_inodes = current
        unused: set[int] = set()
        for pid in sorted(pids):
            self._scan_pid(pid, current, unused)
        self._ownerless = {i for i in current if i not in self._holders}

    def _scan_pid(self, pid: int, inet: set[int], changed: set[int]) -> None:
        """Record which of ``inet`` the pid holds (one fd directory read).

        Args:
            pid: process to scan; what was known of it is replaced.
            inet: inodes of inet sockets; other fds (files, unix sockets) are
                ignored.
            changed: receives every inode whose holder list changed.
        """
        self._forget_pid(pid, changed)
        base = f"{self._root}/{pid}/fd/"
        try:
            names = os.listdir(base)
        except PermissionError:
            self._denied.add(pid)
            return
        except OSError:
            return
        self.pids_scanned += 1
        found: dict[int, int] = {}
        readlink = os.readlink
        for name in names:
            try:
                link = readlink(base + name)
            except OSError:
                continue
            if link.startswith(_SOCKET_LINK):
                try:
                    inode = int(link[8:-1])
                except ValueError:
                    continue
                if inode in inet:
                    found[inode] = int(name)
        if not found:
            return
        start = _start_time(self._root, pid)
        if start is None:
            return  # exited meanwhile
        self._holdings[pid] = _Holdings(start, found)
        key = self._holder_key
        for inode in found:
            owners = self._holders.get(inode)
            if owners is None:
                self._holders[inode] = [pid]
                self._ownerless.discard(inode)
            else:
                owners.append(pid)
                owners.sort(key=key)
                self._shared.add(inode)
            changed.add(inode)

    def _holder_key(self, pid: int) -> tuple[int, int]:
        holding = self._holdings.get(pid)
        return (holding.start if holding is not None else 0, pid)

    def _forget_pid(self, pid: int, changed: set[int]) -> None:
        holding = self._holdings.pop(pid, None)
        if holding is not None:
            self._drop_holders(pid, holding.sockets, changed)

    def _drop_holders(self, pid: int, inodes: Iterable[int], changed: set[int]) -> None:
        for inode in inodes:
            owners = self._holders.get(inode)
            if owners is None or pid not in owners:
                continue
            owners.remove(pid)
            changed.add(inode)
            if not owners:
                del self._holders[inode]
            if len(owners) < 2:
                self._shared.discard(inode)

    def _verify_shared(self, changed: set[int]) -> None:
        """Re-read the chosen owner's fd link of every shared socket."""
        root = self._root
        for inode in list(self._shared):
            expected = f"{_SOCKET_LINK}{inode}]"
            while True:
                owners = self._holders.get(inode)
                if not owners:
                    break
                pid = owners[0]
                holding = self._holdings.get(pid)
                fd = holding.sockets.get(inode) if holding is not None else None
                try:
                    if fd is not None and os.readlink(f"{root}/{pid}/fd/{fd}") == expected:
                        break
                except OSError:
                    pass
                if holding is not None:
                    holding.sockets.pop(inode, None)
                    if not holding.sockets:
                        del self._holdings[pid]
                self._drop_holders(pid, (inode,), changed)


def _ns_inode(link: str) -> int:
    """Inode of a ``net:[NNN]`` namespace link.

    Raises:
        ValueError: not such a link.
    """
    if not link.startswith("net:[") or not link.endswith("]"):
        raise ValueError(f"not a network namespace link: {link!r}")
    return int(link[5:-1])


def _start_time(root: str, pid: int) -> int | None:
    """Start time of a pid in clock ticks since boot; None if it is gone.

    Field 22 of /proc/<pid>/stat (proc(5)), counted after the ``)`` that
    closes the command name, which may itself contain spaces and parentheses.
    """
    try:
        with open(f"{root}/{pid}/stat", "rb", 0) as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2 :].split(None, 20)[19])
    except (OSError, ValueError, IndexError):
        return None


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
    for inode, pid in (owners or {}).items():
        parser._holders[inode] = [pid]
    parser._finish_misses(misses, records)
    return records
