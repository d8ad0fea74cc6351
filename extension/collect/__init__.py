"""Collect stage: the host's TCP and UDP sockets.

A collector returns a list of :class:`extension.model.SocketRecord`; see
:class:`Collector`. :func:`select_collector` picks the best one for the host.
On Linux that is :class:`LinuxProcCollector`, which reads its own network
namespace over sock_diag netlink (netlink_diag.py) and falls back to
/proc/net files per table when netlink is refused; :class:`SocketOwners`
(owners.py) tells it which process owns each socket.
"""

from __future__ import annotations

import sys

from extension.collect.base import CollectError, Collector
from extension.collect.linux_proc import LinuxProcCollector
from extension.collect.netlink_diag import InetDiagReader, NetlinkError, read_inet_diag
from extension.collect.normalize import normalize_address
from extension.collect.owners import SocketOwners
from extension.collect.psutil_source import PsutilCollector

__all__ = [
    "CollectError",
    "Collector",
    "InetDiagReader",
    "LinuxProcCollector",
    "NetlinkError",
    "PsutilCollector",
    "SocketOwners",
    "normalize_address",
    "read_inet_diag",
    "select_collector",
]


def select_collector(proc_root: str = "/proc") -> Collector:
    """The collector to use on this host.

    Args:
        proc_root: procfs mount point to probe (tests may point elsewhere).

    Returns:
        :class:`LinuxProcCollector` on Linux when ``<proc_root>/net/tcp`` can
        be opened and read (all namespaces, incremental owner lookup; our
        own namespace over netlink when ``proc_root`` is ``/proc``);
        :class:`PsutilCollector` otherwise (macOS, Windows, no procfs).
    """
    if sys.platform.startswith("linux"):
        try:
            with open(f"{proc_root}/net/tcp", "rb") as f:
                f.read(1)
        except OSError:
            pass
        else:
            return LinuxProcCollector(proc_root)
    return PsutilCollector()
