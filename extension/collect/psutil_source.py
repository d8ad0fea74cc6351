"""Portable collector built on ``psutil.net_connections('inet')``.

Works on Linux, macOS and Windows. Limits, as psutil documents them: on Linux
without root, sockets of other users' processes come back with ``pid=None``;
on macOS the call needs root; other network namespaces are not visible.

psutil lists a socket once per process holding it (fork, preforking servers).
Such copies are folded into one record owned by the process that started
first (lowest pid on a tie): the parent that created the socket, which does
not change as workers are recycled.
"""

from __future__ import annotations

import socket
from typing import Any

import psutil

from extension.collect.base import CollectError
from extension.collect.normalize import normalize_address, normalize_family
from extension.model import IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = ["PsutilCollector"]

_PROTOCOLS = {socket.SOCK_STREAM: IPPROTO_TCP, socket.SOCK_DGRAM: IPPROTO_UDP}


def _endpoint(addr: object) -> tuple[str, int] | None:
    """(ip, port) of a psutil ``addr`` namedtuple; None for psutil's empty tuple."""
    if isinstance(addr, tuple) and len(addr) == 2:
        ip, port = addr
        if isinstance(ip, str) and isinstance(port, int):
            return ip, port
    return None


def _state(protocol: int, status: str) -> str:
    if protocol != IPPROTO_TCP or status == psutil.CONN_NONE:
        return ""
    return status


class PsutilCollector:
    """Lists sockets with psutil; satisfies :class:`extension.collect.Collector`.

    ``psutil.net_connections`` lists every process's sockets at once, and on
    macOS (and for protected processes on Windows) one process that denies
    access makes the whole call raise ``AccessDenied``. Then the sockets are
    listed process by process instead (``Process.net_connections``): the
    processes that can be read give their rows, the others are counted in
    :attr:`access_denied_pids`, and one denial never empties the table.

    Attributes:
        access_denied_pids: processes whose sockets could not be read in the
            last call (0 when the host-wide listing worked).
    """

    def __init__(self) -> None:
        self.access_denied_pids = 0

    def collect(self) -> list[SocketRecord]:
        """Return every TCP/UDP socket psutil can see.

        Raises:
            CollectError: psutil could list neither the host's sockets nor
                its processes.
        """
        try:
            conns: list[tuple[Any, int | None]] = [
                (c, c.pid) for c in psutil.net_connections(kind="inet")
            ]
            self.access_denied_pids = 0
        except psutil.AccessDenied:
            conns = self._per_process()
        except (psutil.Error, OSError) as err:
            raise CollectError(f"psutil.net_connections failed: {err}") from err
        records: dict[tuple[object, ...], SocketRecord] = {}
        for conn, pid in conns:
            protocol = _PROTOCOLS.get(conn.type)
            if protocol is None:
                continue
            try:
                os_family = normalize_family(conn.family)
            except ValueError:
                continue
            local = _endpoint(conn.laddr)
            if local is None:
                continue
            local_family, local_address = normalize_address(os_family, local[0])
            remote_address, remote_port = "", 0
            remote = _endpoint(conn.raddr)
            if remote is not None:
                _, remote_address = normalize_address(os_family, remote[0])
                remote_port = remote[1]
            record = SocketRecord(
                pid=pid,
                family=local_family,
                protocol=protocol,
                local_address=local_address,
                local_port=local[1],
                remote_address=remote_address,
                remote_port=remote_port,
                state=_state(protocol, conn.status),
            )
            key = (local_family, protocol, local_address, local[1], remote_address, remote_port)
            held = records.get(key)
            if held is None or _owner_rank(record.pid) < _owner_rank(held.pid):
                records[key] = record
        return list(records.values())


    def _per_process(self) -> list[tuple[Any, int | None]]:
        """Every readable process's sockets, with its pid; denials counted.

        Raises:
            CollectError: the processes cannot be listed at all.
        """
        out: list[tuple[Any, int | None]] = []
        denied = 0
        try:
            processes = list(psutil.process_iter())
        except (psutil.Error, OSError) as err:
            raise CollectError(f"cannot list processes: {err}") from err
        for proc in processes:
            try:
                out.extend((c, proc.pid) for c in proc.net_connections(kind="inet"))
            except psutil.AccessDenied:
                denied += 1
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            except (psutil.Error, OSError):
                denied += 1
        self.access_denied_pids = denied
        return out


def _owner_rank(pid: int | None) -> tuple[float, int]:
    """Sort key choosing a shared socket's owner: earliest start, then lowest pid."""
    if pid is None:
        return (float("inf"), 0)
    try:
        return (psutil.Process(pid).create_time(), pid)
    except psutil.Error:
        return (float("inf"), pid)
