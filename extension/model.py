"""Typed records passed between the collect, enrich and serve stages."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AF_INET", "AF_INET6", "IPPROTO_TCP", "IPPROTO_UDP", "ProcessInfo", "SocketRecord"]

AF_INET = 2
"""IPv4 address family number, as osquery reports it on every OS."""
AF_INET6 = 10
"""IPv6 address family number, as osquery reports it on every OS (Linux's value)."""
IPPROTO_TCP = 6
IPPROTO_UDP = 17


@dataclass(frozen=True, slots=True)
class SocketRecord:
    """One TCP or UDP socket as seen by a collector.

    Attributes:
        pid: owning process id, or None when the OS did not say (no privilege,
            or a socket with no owner such as TIME_WAIT on Linux).
        family: 2 (IPv4) or 10 (IPv6); IPv4-mapped IPv6 addresses are already
            reported as IPv4.
        protocol: 6 (TCP) or 17 (UDP).
        local_address: textual IP address.
        local_port: 0-65535.
        remote_address: textual IP address, '' when there is none.
        remote_port: 0 when there is none.
        state: TCP state name such as 'ESTABLISHED' or 'LISTEN'; '' for UDP.
        socket: socket inode (Linux), or None.
        net_namespace: network namespace inode (Linux), or None.
    """

    pid: int | None
    family: int
    protocol: int
    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    state: str
    socket: int | None = None
    net_namespace: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What is known of one process; every field may be unknown (None).

    Attributes:
        name: process name.
        path: executable path.
        cmdline: arguments joined with single spaces.
        uid: real user id.
        username: user name of ``uid``.
        parent: parent process id.
        parent_name: parent process name.
        parent_path: parent executable path.
        start_time: process start, seconds since the Unix epoch.
    """

    name: str | None = None
    path: str | None = None
    cmdline: str | None = None
    uid: int | None = None
    username: str | None = None
    parent: int | None = None
    parent_name: str | None = None
    parent_path: str | None = None
    start_time: int | None = None
