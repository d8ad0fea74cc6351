"""Network namespaces no process is in, and reading them from inside.

A network namespace lives as long as something refers to it: a process in
it, a bind mount of its nsfs file (``ip netns add`` mounts one under
``/run/netns``), an open file descriptor of that file, or a socket created
in it. A process can ``setns(2)`` into a namespace, open sockets there and
``setns`` back: its sockets stay in that namespace while no process is a
member, so ``/proc/<pid>/net`` of no process shows them (namespaces(7),
network_namespaces(7)).

This module finds such namespaces by what refers to them:

* nsfs mounts, in ``/proc/<pid>/mountinfo`` (proc(5): field 4 is the root
  of the mount, ``net:[<inode>]`` for a network namespace's nsfs file;
  field 5 the mount point; the file system type ``nsfs`` follows `` - ``),
  read for our own mount namespace and once for each other one;
* open descriptors, recorded by :class:`~extension.collect.owners.SocketOwners`
  while it scans ``/proc/<pid>/fd`` (their links read ``net:[<inode>]``),

and reads one from inside: the calling thread ``setns``es into it (only
that thread moves; setns(2)), reads ``/proc/thread-self/net/*``, which show
the namespace of the reading thread, and returns to its own namespace.
Python 3.11 has no ``os.setns`` (3.12 added it), so libc's is called
through ctypes. Every descriptor is closed at once, so that the extension
never keeps a namespace alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from typing import Final

__all__ = [
    "CLONE_NEWNET",
    "NetnsError",
    "NetnsStuckError",
    "enter_netns",
    "nsfs_mounts",
    "own_netns_fd",
]

CLONE_NEWNET: Final = 0x40000000
"""include/uapi/linux/sched.h."""


class NetnsError(Exception):
    """A namespace could not be entered; the thread is where it was."""


class NetnsStuckError(NetnsError):
    """The thread could not return to its own namespace: it must not be used again."""


def nsfs_mounts(mountinfo: str) -> dict[int, str]:
    """Network namespaces mounted in one mount namespace.

    Args:
        mountinfo: a ``/proc/<pid>/mountinfo`` file.

    Returns:
        namespace inode -> mount point, as that mount namespace sees it; {}
        when the file cannot be read.
    """
    found: dict[int, str] = {}
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return found
    for line in lines:
        head, sep, tail = line.partition(" - ")
        if not sep or not tail.startswith("nsfs "):
            continue
        fields = head.split()
        if len(fields) < 5 or not fields[3].startswith("net:["):
            continue
        try:
            inode = int(fields[3][5:-1])
        except ValueError:
            continue
        found.setdefault(inode, _unescape(fields[4]))
    return found


def _unescape(path: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040...)."""
    if "\\" not in path:
        return path
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc  # noqa: PLW0603 - one handle for the process
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(ctypes.c_int(fd), ctypes.c_int(CLONE_NEWNET)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def own_netns_fd(proc_root: str = "/proc") -> int:
    """A descriptor of the calling thread's network namespace, to come back to.

    Raises:
        OSError: it cannot be opened.
    """
    return os.open(f"{proc_root}/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@contextlib.contextmanager
def enter_netns(path: str, home_fd: int) -> Iterator[None]:
    """Run the block with the calling thread in the network namespace at ``path``.

    Args:
        path: the namespace's nsfs file: a bind mount, ``/proc/<pid>/fd/<n>``
            or ``/proc/<pid>/root/<mount point>``.
        home_fd: from :func:`own_netns_fd`, where the thread returns.

    Raises:
        NetnsError: the namespace could not be entered (nothing was changed).
        NetnsStuckError: the thread could not return home, which leaves it
            elsewhere: the caller must stop using this thread for namespaced
            work.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetnsError(f"cannot open {path}: {err}") from err
    try:
        try:
            _setns(fd)
        except OSError as err:
            raise NetnsError(f"cannot enter the network namespace of {path}: {err}") from err
    finally:
        os.close(fd)
    try:
        yield
    finally:
        try:
            _setns(home_fd)
        except OSError as err:
            raise NetnsStuckError(f"cannot return to our own network namespace: {err}") from err
