"""Typed records passed between the collect, enrich and serve stages."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AF_INET",
    "AF_INET6",
    "DIRECTIONS",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "STATUSES",
    "FlowEvent",
    "ProcessInfo",
    "SocketRecord",
]

AF_INET = 2
"""IPv4 address family number, as osquery reports it on every OS."""
AF_INET6 = 10
"""IPv6 address family number, as osquery reports it on every OS (Linux's value)."""
IPPROTO_TCP = 6
IPPROTO_UDP = 17

DIRECTIONS = ("inbound", "outbound", "listening", "")
"""Values of the ``direction`` column."""

STATUSES = ("connected", "refused", "unreachable", "timed_out", "")
"""Values of the ``status`` column: how a TCP connection attempt ended.

``connected``: the handshake completed. ``refused``: the remote answered the
SYN with a reset (ECONNREFUSED). ``unreachable``: an ICMP error came back
(EHOSTUNREACH, ENETUNREACH, EACCES). ``timed_out``: no answer: the kernel
gave up (ETIMEDOUT), the process gave up and closed the socket, or the
attempt was still unanswered when its row was first served. ``''``: no
handshake applies or none was observed (listeners, UDP).
"""


@dataclass(slots=True)
class SocketRecord:
    """One TCP or UDP socket as seen by a collector.

    Treated as immutable: nothing changes a record once built (a changed
    socket is a new record; ``dataclasses.replace`` makes one). It is not a
    frozen dataclass because collectors and the kernel event source build
    tens of thousands a second, and a frozen one costs four times as much to
    build.

    Attributes:
        pid: owning process id, or None when the OS did not say (no privilege,
            or a socket with no owner such as TIME_WAIT on Linux).
        family: 2 (IPv4) or 10 (IPv6), IPv4-mapped IPv6 addresses already
            reported as IPv4; 17 (AF_PACKET) for a packet socket.
        protocol: 6 (TCP), 17 (UDP), 1 (ICMP), 58 (ICMPv6), or another IP
            protocol number for a raw socket; for a packet socket, the
            Ethernet protocol it receives (3: every frame).
        local_address: textual IP address.
        local_port: 0-65535.
        remote_address: textual IP address, '' when there is none.
        remote_port: 0 when there is none.
        state: TCP state name such as 'ESTABLISHED' or 'LISTEN'; '' for UDP.
        socket: socket inode (Linux), or None.
        net_namespace: network namespace inode (Linux), or None.
        interface: for a packet socket, the interface it is bound to ('' for
            every interface); None for other sockets.
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
    interface: str | None = None


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


@dataclass(slots=True)
class FlowEvent:
    """A connection, attempt, listener or UDP flow reported by kernel events.

    The kernel event source emits one for each new flow, and again with the
    same ``key`` when it learns more (the outcome, the end). Not frozen: a
    busy host makes thousands a second, and a frozen dataclass costs twice as
    much to build; nothing changes one after it is emitted.

    Attributes:
        key: identity of the flow within the event source, e.g.
            ``("tcp", <kernel socket address>, <start ns>)``.
        record: the socket as the events describe it: ``pid`` is the task
            that connected, sent or listened, or that closed an inbound
            connection (None for an inbound connection no task has touched
            yet: its owner is the listener's), ``state`` the latest TCP state
            ('' for UDP), ``socket`` the inode when it could be looked up,
            ``net_namespace`` when known.
        process: details of ``record.pid`` captured when the event was read,
            or None when the pid is unknown.
        direction: 'outbound', 'inbound' or 'listening'.
        status: one of :data:`STATUSES`.
        started: seconds since the Unix epoch when the flow began (the
            connect, the handshake, the listen, the first datagram).
        ended: seconds since the Unix epoch when the kernel closed it; None
            while open. The kernel has no UDP close event: a connected UDP
            flow whose socket a lookup no longer finds has ended then;
            otherwise the sampler notices the socket is gone.
    """

    key: tuple[object, ...]
    record: SocketRecord
    process: ProcessInfo | None
    direction: str
    status: str
    started: float
    ended: float | None = None
