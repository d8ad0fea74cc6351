"""Real sockets opened by tests and benchmarks, and closed without TIME_WAIT."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterable

_LINGER_RESET = struct.pack("ii", 1, 0)


def close_with_reset(sockets: Iterable[socket.socket]) -> None:
    """Close each socket with SO_LINGER 0: RST instead of FIN, so no TIME_WAIT remains
    and the 4-tuple is free at once."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()


def open_mixed_sockets(tcp_pairs: int) -> list[socket.socket]:
    """Open a mix of live sockets over loopback; the caller closes them.

    Layout of the returned list, which tests index from the end:
    two TCP listeners (127.0.0.1, ::1); ``tcp_pairs`` established pairs
    (client, accepted) alternating between them; a dual-stack ``::`` listener,
    a v4-mapped client to it and its accepted end; then for IPv4 and IPv6 a
    bound UDP socket and a UDP socket connected to it. On error, whatever was
    opened is closed before the exception propagates.
    """
    held: list[socket.socket] = []
    try:
        listeners = [
            socket.create_server(("127.0.0.1", 0), backlog=512),
            socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=512),
        ]
        held += listeners
        for i in range(tcp_pairs):
            listener = listeners[i % 2]
            client = socket.socket(listener.family, socket.SOCK_STREAM)
            held.append(client)
            client.connect(listener.getsockname()[:2])
            held.append(listener.accept()[0])
        dual = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
        held.append(dual)
        held.append(socket.create_connection(("127.0.0.1", dual.getsockname()[1])))
        held.append(dual.accept()[0])
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            bound = socket.socket(family, socket.SOCK_DGRAM)
            held.append(bound)
            bound.bind((host, 0))
            connected = socket.socket(family, socket.SOCK_DGRAM)
            held.append(connected)
            connected.connect(bound.getsockname()[:2])
    except BaseException:
        close_with_reset(held)
        raise
    return held


def socket_inode(sock: socket.socket) -> int:
    """The inode of ``sock`` (``socket:[N]`` in /proc/PID/fd, ``inode`` in /proc/net/tcp)."""
    return os.fstat(sock.fileno()).st_ino


def socket_inodes(sockets: Iterable[socket.socket]) -> set[int]:
    """The inodes of ``sockets``: how a live test finds its own sockets among a busy
    host's, where port numbers repeat across processes and network namespaces."""
    return {socket_inode(sock) for sock in sockets}


def own_net_namespace() -> int:
    """Inode of this process's network namespace (``net:[N]`` in /proc/self/ns/net)."""
    return os.stat("/proc/self/ns/net").st_ino
