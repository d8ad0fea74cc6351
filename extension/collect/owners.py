"""Socket owners: which process holds each socket inode, kept up to date per sample.

:class:`SocketOwners` maps the inode of every listed TCP/UDP socket to the
pid reported as its owner. It reads ``/proc/<pid>/fd`` directories and
``/proc/<pid>/stat`` files only; the socket tables themselves are read by
:class:`extension.collect.linux_proc.LinuxProcCollector`, which hands each
sample's listed inodes (and which of them are new) to :meth:`SocketOwners.update`.

Owner rule: a socket inode may be held by several processes (fork,
pre-fork servers, fd passing). The owner is the holder with the **earliest
start time, ties to the lowest pid** -- the process that created or
inherited it first (the master of a pre-fork server), which does not flap as
workers come and go. Sockets without an owner (inode 0: TIME_WAIT,
SYN_RECV requests, orphans) and sockets whose holders cannot be read get no
owner (``pid=None`` in the records).

Incremental resolution, per :meth:`SocketOwners.update`:

* pids that exited are dropped from the holder map; pids already known to
  hold inet sockets have their start time re-read (a reused pid is
  rescanned); pids that appeared since the last call have their
  ``/proc/<pid>/fd`` scanned (a fork child inherits its parent's sockets);
* for sockets known to be held by several pids, the chosen owner's fd link
  is re-read (one readlink each), a slice of them per call so that each is
  read at least every ``2 * SHARED_ROUNDS`` calls: a socket whose creator
  closed its copy moves to the next holder within that many samples;
* when a socket inode appears that no known pid holds (and that an earlier
  search did not already find ownerless), a targeted scan looks for it:
  first the pids known to hold a few inet sockets (a server that accepts a
  connection), then the pids not known to hold any, last the pids holding
  more than 256 (the costliest to read), stopping once every new inode is
  found. In these rescans an fd whose known socket is still listed and not
  shared is not re-read (one ``listdir`` and a readlink per other fd). An
  inode no readable pid holds is ownerless until it disappears;
* a full scan of every ``/proc/<pid>/fd`` happens on the first call and
  every ``rescan_after`` seconds.

Known limits of fd passing (SCM_RIGHTS, pidfd_getfd) to an already-running
process, until the next full scan: a passed socket whose sender then closes
it keeps the sender as owner; a new socket held by several already-running
processes is owned by the holder the targeted scan found first; if the
sender closes a passed socket and its fd number is reused for a new socket,
that new socket shows without owner.

Sources of the facts used here:

* Linux proc(5): ``/proc/<pid>/fd/<n>`` links of sockets read
  ``socket:[<inode>]``, the inode printed in the ``inode`` column of
  ``/proc/net/{tcp,tcp6,udp,udp6}``; field 22 of ``/proc/<pid>/stat``
  (``starttime``) is the start time in clock ticks since boot, counted
  after the ``)`` closing the command name.
* osquery (osquery/filesystem/linux/proc.cpp, table
  ``process_open_sockets``) maps inodes to pids from ``/proc/<pid>/fd`` too,
  and attributes a shared socket to whichever pid its map saw last
  (osquery 5.23 osquery/tables/networking/linux/process_open_sockets.cpp);
  the owner rule above makes the choice stable.
* The inode -> owner lookup races with close(2) (raboof/nethogs
  issue #125): a pid may exit or drop its fd between the
  listing and the readlink, so every read here tolerates ``OSError``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from extension.model import SocketRecord

__all__ = ["SocketOwners"]

_SOCKET_LINK = "socket:["
_NETNS_LINK = "net:["
SHARED_SLICE = 256
"""Least shared sockets whose owner is re-verified per update."""
SHARED_ROUNDS = 40
"""A shared socket's owner is re-verified at least every twice this many updates."""
_HEAVY_HOLDER = 256
"""A pid known to hold more inet sockets than this is read last when looking
for the holder of a new socket (its fd directory is the costliest)."""


@dataclass(slots=True)
class _Holdings:
    """What one process holds: its start time and its inet socket fds.

    Attributes:
        start: start time, clock ticks since boot (/proc/<pid>/stat field 22).
        sockets: socket inode -> fd number.
    """

    start: int
    sockets: dict[int, int] = field(default_factory=dict)


class SocketOwners:
    """Socket inode -> owner pid, brought up to date once per sample.

    See the module docstring for the owner rule, when full and targeted fd
    scans happen, and the limits of fd passing.

    Not thread-safe: one :meth:`update` at a time.

    Args:
        proc_root: procfs mount point (a fake tree in tests).
        rescan_after: seconds between forced full fd scans; None never forces
            (only the first call does one).
        clock: monotonic seconds (injectable for tests).

    Attributes:
        fd_scans: number of full fd scans done so far (every pid's fd
            directory read).
        targeted_scans: number of targeted scans so far (searches for the
            holders of new sockets).
        pids_scanned: number of ``/proc/<pid>/fd`` directories read so far, by
            full and incremental scans together.
        access_denied_pids: live pids whose fd directory could not be read
            (PermissionError, i.e. not root) as of the last :meth:`update`;
            their sockets get no owner.
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
        self.targeted_scans = 0
        self.pids_scanned = 0
        self.access_denied_pids = 0
        self._last_full_scan: float | None = None
        self._known_pids: set[int] = set()
        self._denied: set[int] = set()
        self._holdings: dict[int, _Holdings] = {}
        self._holders: dict[int, list[int]] = {}
        self._shared: set[int] = set()
        self._verify_queue: list[int] = []
        self._ownerless: set[int] = set()
        self._inet_inodes: set[int] = set()
        # pid -> {network namespace inode: fd number} of namespace fds it holds.
        self._netns_fds: dict[int, dict[int, int]] = {}

    # ------------------------------------------------------------------ API

    def held_namespaces(self) -> dict[int, tuple[int, int]]:
        """Network namespaces that processes hold open, as seen by the fd scans.

        Returns:
            namespace inode -> (pid, fd number) of one holder.
        """
        held: dict[int, tuple[int, int]] = {}
        for pid, fds in self._netns_fds.items():
            for inode, fd in fds.items():
                held.setdefault(inode, (pid, fd))
        return held

    def holders(self, inode: int) -> list[int]:
        """Every pid holding a socket as of the last :meth:`update`, owner first."""
        return list(self._holders.get(inode, ()))

    def owner(self, inode: int) -> int | None:
        """The owner of a socket as of the last :meth:`update`.

        Args:
            inode: socket inode.

        Returns:
            the pid (earliest start time among the holders, ties to the
            lowest pid), or None when no readable process holds it.
        """
        owners = self._holders.get(inode)
        return owners[0] if owners else None

    def update(
        self, pids: set[int], listed: Sequence[SocketRecord], new: set[int]
    ) -> set[int] | None:
        """Bring the inode -> owner map up to date for one sample.

        Args:
            pids: every live pid, listed at the start of this sample.
            listed: records of the sockets listed in this sample whose inode
                was already seen (their ``socket`` is read only when a
                targeted or full scan needs the whole listed set).
            new: inodes (non-zero) of the sockets listed in this sample that
                were not seen before, or whose table line changed.

        Returns:
            the inodes whose owner may have changed since the last call, or
            None after a full scan (every owner may have changed).
        """
        changed: set[int] = set()
        self._inet_inodes |= new
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
            unknown = {i for i in new if i not in holders and i not in ownerless}
            orphaned = {i for i in changed if i not in holders and i not in ownerless}
            if orphaned - new:
                # Every known holder of a listed socket let go of it, yet the
                # socket is still listed: someone else holds it.
                current = {r.socket for r in listed if r.socket}
                unknown |= orphaned & current
            if unknown:
                every = {r.socket for r in listed if r.socket} | new
                left = self._targeted_scan(unknown, fresh, pids, every, changed)
                self._ownerless |= left  # every readable pid was read: no holder
        self._known_pids = pids
        if full:
            current = {r.socket for r in listed if r.socket} | new
            self._full_scan(pids, current)
            self._last_full_scan = now
        self._denied &= pids
        self.access_denied_pids = len(self._denied)
        return None if full else changed

    # ---------------------------------------------------------------- scans

    def _targeted_scan(
        self,
        unknown: set[int],
        scanned: set[int],
        pids: set[int],
        listed: set[int],
        changed: set[int],
    ) -> set[int]:
        """Find the holders of new sockets, reading as few fd directories as may be.

        Order: pids known to hold at most ``_HEAVY_HOLDER`` inet sockets
        (fewest first), then pids not known to hold any (newest pid first),
        then the heavy holders (fewest first); the search stops once every
        inode of ``unknown`` has a holder. When a pid known to hold sockets is
        rescanned, an fd whose known socket is still listed and held by no
        other known pid is trusted without a readlink: the pid cannot have
        closed it (the socket would be gone), so the fd number was not
        reused. A shared socket's fd is re-read: its number may now be a
        new socket's.

        Args:
            unknown: listed inodes without a known holder.
            scanned: pids already scanned in this call (skipped).
            pids: every live pid.
            listed: every inode listed in this call.
            changed: receives every inode whose holder list changed.

        Returns:
            the inodes of ``unknown`` no readable pid holds (every pid was
            then read); empty when all were found.
        """
        self.targeted_scans += 1
        holdings = self._holdings
        shared = self._shared
        light: list[tuple[int, int]] = []
        heavy: list[tuple[int, int]] = []
        for pid, held in holdings.items():
            if pid not in scanned:
                count = len(held.sockets)
                (heavy if count > _HEAVY_HOLDER else light).append((count, pid))
        others = sorted((p for p in pids if p not in holdings and p not in scanned), reverse=True)
        order = [p for _, p in sorted(light)] + others + [p for _, p in sorted(heavy)]
        for pid in order:
            holding = holdings.get(pid)
            if holding is None:
                self._scan_pid(pid, self._inet_inodes, changed)
            else:
                trusted = {
                    fd: inode
                    for inode, fd in holding.sockets.items()
                    if inode in listed and inode not in shared
                }
                self._scan_pid(pid, self._inet_inodes, changed, trusted, holding.start)
            if any(i in self._holders for i in unknown):
                unknown = {i for i in unknown if i not in self._holders}
                if not unknown:
                    break
        return unknown

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

    def _scan_pid(
        self,
        pid: int,
        inet: set[int],
        changed: set[int],
        trusted: dict[int, int] | None = None,
        start: int | None = None,
    ) -> None:
        """Record which of ``inet`` the pid holds (one fd directory read).

        Args:
            pid: process to scan; what was known of it is replaced.
            inet: inodes of inet sockets; other fds (files, unix sockets) are
                ignored.
            changed: receives every inode whose holder list changed.
            trusted: fd number -> inode believed without a readlink.
            start: the pid's start time when already read in this call.
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
        namespaces: dict[int, int] = {}
        readlink = os.readlink
        for name in names:
            if trusted:
                known = trusted.get(int(name))
                if known is not None:
                    found[known] = int(name)
                    continue
            try:
                link = readlink(base + name)
            except OSError:
                continue
            if link.startswith(_NETNS_LINK):
                with contextlib.suppress(ValueError):
                    namespaces[int(link[5:-1])] = int(name)
                continue
            if link.startswith(_SOCKET_LINK):
                try:
                    inode = int(link[8:-1])
                except ValueError:
                    continue
                if inode in inet:
                    found[inode] = int(name)
        if namespaces:
            self._netns_fds[pid] = namespaces
        if not found:
            return
        if start is None:
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

    # ------------------------------------------------------- holder bookkeeping

    def _holder_key(self, pid: int) -> tuple[int, int]:
        """Sort key of the owner rule: (start time, pid)."""
        holding = self._holdings.get(pid)
        return (holding.start if holding is not None else 0, pid)

    def _forget_pid(self, pid: int, changed: set[int]) -> None:
        """Drop everything known of a pid (it exited, was reused or is rescanned)."""
        self._netns_fds.pop(pid, None)
        holding = self._holdings.pop(pid, None)
        if holding is not None:
            self._drop_holders(pid, holding.sockets, changed)

    def _drop_holders(self, pid: int, inodes: Iterable[int], changed: set[int]) -> None:
        """Remove ``pid`` from the holder lists of ``inodes``."""
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
        """Re-read the chosen owner's fd link of a slice of the shared sockets.

        Each call checks the next ``max(SHARED_SLICE, ceil(len(shared) /
        SHARED_ROUNDS))`` shared sockets, in turn, so every one is checked
        within ``2 * SHARED_ROUNDS`` calls of becoming shared (20 s at 10k
        shared sockets and a 250 ms interval). An owner that exits or is
        replaced by a reused pid is noticed at once all the same (its start
        time is read every sample); only an owner that closes its copy while
        it lives is noticed this much later, which matters only to a row not
        yet shown (a shown row's owner is fixed).
        """
        shared = self._shared
        if not shared:
            return
        if not self._verify_queue:
            self._verify_queue = list(shared)
        take = max(SHARED_SLICE, -(-len(shared) // SHARED_ROUNDS))
        queue = self._verify_queue
        batch = queue[-take:]
        del queue[-take:]
        root = self._root
        for inode in batch:
            if inode not in shared:
                continue
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
