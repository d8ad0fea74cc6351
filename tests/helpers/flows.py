"""Short-lived connections of every kind, with their ground truth.

Used by the kernel-event tests and benchmarks/fidelity_bench.py. Each
function makes real connections on loopback and returns what happened, so
that a caller can look for each one in the table or in osquery's results
log by its own ports (never by a port alone: other processes on the host may
use the same ones).

Kinds:

* ``tcp_short``: outbound TCP to a listener, closed ``hold_secs`` after
  connect;
* ``refused``: ``connect()`` to ports bound by :func:`closed_ports` but not
  listening, answered by RST;
* ``udp_short``: a connected UDP socket sends one datagram and closes;
* the inbound side of ``tcp_short``: accepted by a :class:`Server` running in
  a child process of its own name;
* ``forked_connects``: short-lived forked children, each connecting once
  and exiting.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Attempt",
    "Server",
    "closed_ports",
    "comm",
    "forked_connects",
    "refused",
    "set_comm",
    "tcp_short",
    "udp_short",
]

_PR_SET_NAME = 15


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection or attempt as the process that made it knows it.

    Attributes:
        pid: the process that connected (or sent).
        name: its kernel name (``/proc/<pid>/comm``).
        protocol: 6 or 17.
        local_port: its local port, 0 when the kernel did not say (refused).
        remote_port: the port it connected to.
    """

    pid: int
    name: str
    protocol: int
    local_port: int
    remote_port: int


def set_comm(name: str) -> None:
    """Name this process (prctl PR_SET_NAME; 15 characters are kept)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def comm(pid: int | None = None) -> str:
    """The kernel name of ``pid`` (this process by default)."""
    with open(f"/proc/{pid or 'self'}/comm", encoding="utf-8") as f:
        return f.read().strip()


@contextlib.contextmanager
def closed_ports(count: int, host: str = "127.0.0.1") -> Iterator[list[int]]:
    """``count`` ports that are bound but not listening: a connect to them is refused.

    Holding the ports bound keeps any other process from listening on them
    while the caller connects.
    """
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            held.append(sock)
        yield [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def tcp_short(port: int, count: int, hold_secs: float = 0.001,
              host: str = "127.0.0.1") -> list[Attempt]:  # fmt: skip
    """``count`` outbound TCP connections to ``host:port``, each closed after ``hold_secs``."""
    me, name = os.getpid(), comm()
    done = []
    for _ in range(count):
        sock = socket.create_connection((host, port))
        local_port = sock.getsockname()[1]
        sock.send(b"x")
        time.sleep(hold_secs)
        sock.close()
        done.append(Attempt(me, name, 6, local_port, port))
    return done


def refused(ports: list[int], host: str = "127.0.0.1") -> list[Attempt]:
    """One connect() to each port, each answered by a reset."""
    me, name = os.getpid(), comm()
    done = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError(f"port {port} accepted a connection")
        finally:
            sock.close()
        done.append(Attempt(me, name, 6, 0, port))
    return done


def udp_short(port: int, count: int, host: str = "127.0.0.1") -> list[Attempt]:
    """``count`` connected UDP sockets, each sending one datagram and closing at once."""
    me, name = os.getpid(), comm()
    done = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((host, port))
        local_port = sock.getsockname()[1]
        sock.send(b"x")
        sock.close()
        done.append(Attempt(me, name, 17, local_port, port))
    return done


def forked_connects(port: int, count: int, name: str, host: str = "127.0.0.1") -> list[Attempt]:
    """``count`` forked children named ``name``, each connecting once and exiting at once.

    Each child reports its local port through a pipe before it exits.
    """
    done = []
    for _ in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                os.close(read_end)
                set_comm(name)
                sock = socket.create_connection((host, port))
                os.write(write_end, str(sock.getsockname()[1]).encode())
                sock.close()
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or not answer:
            raise AssertionError(f"child {pid} failed to connect")
        done.append(Attempt(pid, name[:15], 6, int(answer), port))
    return done


class Server:
    """A TCP listener in a child process named ``name`` that accepts, reads to EOF, closes.

    Use as a context manager; ``port`` and ``pid`` are set once it listens.
    Also binds a UDP socket on the same port number that drains datagrams.
    """

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name[:15]
        self.host = host
        self.port = 0
        self.pid = 0

    def __enter__(self) -> Server:
        listener = socket.create_server((self.host, 0), backlog=1024)
        self.port = listener.getsockname()[1]
        datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagrams.bind((self.host, self.port))
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(ready_r)
                set_comm(self.name)
                os.write(ready_w, b"1")
                os.close(ready_w)
                _serve(listener, datagrams)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        listener.close()
        datagrams.close()
        self.pid = pid
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)


def _serve(listener: socket.socket, datagrams: socket.socket) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    listener.setblocking(False)
    datagrams.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "listener")
    selector.register(datagrams, selectors.EVENT_READ, "udp")
    while True:
        for key, _ in selector.select():
            if key.data == "listener":
                with contextlib.suppress(BlockingIOError):
                    while True:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        selector.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
                with contextlib.suppress(BlockingIOError):
                    while True:
                        datagrams.recv(2048)
            else:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(conn)
                    conn.close()
