"""sock_diag netlink reader: protocol handling, live differential, fallback.

* Protocol: a "kernel" on the far end of an AF_UNIX SOCK_SEQPACKET pair
  (the reader's socket-factory seam) answers with datagrams built from the
  uapi layouts (linux/netlink.h, linux/inet_diag.h): multipart answers,
  NLMSG_NOOP, NLMSG_ERROR, truncation, malformed lengths, no answer.
* Live: on sockets this test opens, the netlink path, the /proc path and
  ``psutil.net_connections('inet')`` agree record for record.
* Fallback: netlink refused (EPERM from the socket factory), one protocol
  refused by the kernel (a relay forwards the other requests to the real
  kernel), a dump cut off after its first datagram.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from extension.collect import LinuxProcCollector
from extension.collect.netlink_diag import (
    SOCK_DIAG_BY_FAMILY,
    TCP_STATES_MASK,
    UDP_STATES_MASK,
    DiagEntry,
    DiagMiss,
    InetDiagReader,
    NetlinkError,
    open_diag_socket,
    read_inet_diag,
)
from extension.collect.normalize import normalize_address, normalize_family
from extension.model import SocketRecord
from tests.helpers.sockets import (
    close_with_reset,
    open_mixed_sockets,
    own_net_namespace,
    socket_inodes,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

ME = os.getpid()
NLM_F_MULTI = 0x2
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
TCP, UDP = 6, 17

_Key = tuple[int | None, int, int, str, int, str, int, str]


def _key(r: SocketRecord) -> _Key:
    return (
        r.pid,
        r.family,
        r.protocol,
        r.local_address,
        r.local_port,
        r.remote_address,
        r.remote_port,
        r.state,
    )


def _own_ns() -> int:
    return int(os.readlink("/proc/self/ns/net")[5:-1])


# ------------------------------------------------- messages per uapi layout


def _align(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def nlmsg(kind: int, payload: bytes, flags: int = NLM_F_MULTI, seq: int = 1) -> bytes:
    """struct nlmsghdr + payload, padded to NLMSG_ALIGN (linux/netlink.h)."""
    return _align(struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload)


def diag_msg(  # noqa: PLR0917 (the struct's fields, in order)
    family: int,
    state: int,
    local: tuple[str, int],
    remote: tuple[str, int],
    inode: int,
    cookie: int = 1,
    attributes: bytes = b"",
) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message: struct inet_diag_msg (+ attributes)."""
    size = 4 if family == socket.AF_INET else 16
    src = socket.inet_pton(family, local[0]).ljust(16, b"\0")
    dst = socket.inet_pton(family, remote[0]).ljust(16, b"\0")
    assert len(src) == len(dst) == 16 and size in (4, 16)
    payload = (
        struct.pack("=BBBB", family, state, 0, 0)
        + struct.pack("!HH", local[1], remote[1])
        + src
        + dst
        + struct.pack("=IQ", 0, cookie)
        + struct.pack("=IIIII", 0, 0, 0, 1000, inode)
        + attributes
    )
    return nlmsg(SOCK_DIAG_BY_FAMILY, payload)


DONE = nlmsg(NLMSG_DONE, struct.pack("=i", 0))


def error_msg(code: int) -> bytes:
    """NLMSG_ERROR: negative errno, then the request's header (struct nlmsgerr)."""
    return nlmsg(NLMSG_ERROR, struct.pack("=i", -code) + bytes(16), flags=0)


class KernelStandin:
    """Socket factory whose sockets were answered in advance.

    Each call returns one end of a SOCK_SEQPACKET pair with the next answer's
    datagrams already queued on it; the request the reader sends stays on
    the other end for the test to inspect.
    """

    def __init__(self, *answers: list[bytes], close_after: bool = True) -> None:
        self._answers = list(answers)
        self._close_after = close_after
        self._peers: list[socket.socket] = []

    def __call__(self) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for datagram in self._answers.pop(0):
            theirs.send(datagram)
        self._peers.append(theirs)
        if self._close_after:
            theirs.shutdown(socket.SHUT_WR)
        return mine

    def requests(self) -> list[bytes]:
        found = []
        for peer in self._peers:
            peer.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                found.append(peer.recv(4096))
        return found

    def close(self) -> None:
        for peer in self._peers:
            peer.close()


@pytest.fixture
def standin_factory() -> Iterator[Callable[..., KernelStandin]]:
    made: list[KernelStandin] = []

    def make(*answers: list[bytes], close_after: bool = True) -> KernelStandin:
        standin = KernelStandin(*answers, close_after=close_after)
        made.append(standin)
        return standin

    yield make
    for standin in made:
        standin.close()


# ----------------------------------------------------------------- protocol


def test_request_layout(standin_factory: Callable[..., KernelStandin]) -> None:
    kernel = standin_factory([DONE], [DONE])
    reader = InetDiagReader(kernel)
    assert read_inet_diag(socket.AF_INET6, TCP, reader) == []
    assert read_inet_diag(socket.AF_INET, UDP, reader) == []
    tcp6, udp = kernel.requests()
    for request, family, protocol, states in (
        (tcp6, socket.AF_INET6, TCP, TCP_STATES_MASK),
        (udp, socket.AF_INET, UDP, UDP_STATES_MASK),
    ):
        assert len(request) == 16 + 56
        length, kind, flags, _, _ = struct.unpack_from("=IHHII", request)
        assert (length, kind, flags) == (72, SOCK_DIAG_BY_FAMILY, 0x1 | 0x300)
        assert struct.unpack_from("=BBBBI", request, 16) == (family, protocol, 0, 0, states)
        assert request[24:] == bytes(48)  # empty sockid: every socket
    assert TCP_STATES_MASK & (1 << 6) and TCP_STATES_MASK & (1 << 10)  # TIME_WAIT, LISTEN
    assert not TCP_STATES_MASK & (1 << 13)  # BOUND_INACTIVE: not in /proc/net/tcp
    assert reader.dumps == 2


def test_multipart_decoding_and_normalisation(
    standin_factory: Callable[..., KernelStandin],
) -> None:
    shutdown_attr = _align(struct.pack("=HHB", 5, 8, 0))  # INET_DIAG_SHUTDOWN, u8
    first = (
        diag_msg(10, 10, ("::", 9000), ("::", 0), 501, cookie=1, attributes=shutdown_attr)
        + diag_msg(10, 1, ("::ffff:127.0.0.1", 9000), ("::ffff:127.0.0.1", 40002), 502, 2)
        + nlmsg(NLMSG_NOOP, b"")
    )
    second = (
        diag_msg(10, 1, ("2001:db8::1", 443), ("2001:db8::2", 50000), 503, cookie=3)
        + diag_msg(10, 6, ("::1", 40003), ("::1", 7000), 0, cookie=4)  # TIME_WAIT
        + diag_msg(10, 7, ("::", 0), ("::", 0), 504, cookie=5)  # no local port: no record
        + diag_msg(10, 12, ("::1", 1), ("::1", 2), 505, cookie=6)  # unknown state number
    )
    kernel = standin_factory([first, second, DONE])
    records = read_inet_diag(socket.AF_INET6, TCP, InetDiagReader(kernel), net_namespace=9)
    assert [(*_key(r), r.socket) for r in records] == [
        (None, 10, 6, "::", 9000, "", 0, "LISTEN", 501),
        (None, 2, 6, "127.0.0.1", 9000, "127.0.0.1", 40002, "ESTABLISHED", 502),
        (None, 10, 6, "2001:db8::1", 443, "2001:db8::2", 50000, "ESTABLISHED", 503),
        (None, 10, 6, "::1", 40003, "::1", 7000, "TIME_WAIT", 0),
        (None, 10, 6, "::1", 1, "::1", 2, "UNKNOWN", 505),
    ]
    assert {r.net_namespace for r in records} == {9}


def test_ipv4_and_udp_have_no_state(standin_factory: Callable[..., KernelStandin]) -> None:
    answer = diag_msg(2, 7, ("10.1.2.3", 5353), ("0.0.0.0", 0), 601) + diag_msg(
        2, 1, ("10.1.2.3", 40004), ("10.1.2.3", 53), 602
    )
    kernel = standin_factory([answer, DONE])
    records = read_inet_diag(socket.AF_INET, UDP, InetDiagReader(kernel))
    assert [(*_key(r), r.socket) for r in records] == [
        (None, 2, 17, "10.1.2.3", 5353, "", 0, "", 601),
        (None, 2, 17, "10.1.2.3", 40004, "10.1.2.3", 53, "", 602),
    ]


def test_cache_hits_need_same_inode_and_state(
    standin_factory: Callable[..., KernelStandin],
) -> None:
    listen = diag_msg(2, 10, ("127.0.0.1", 80), ("0.0.0.0", 0), 700, cookie=7)
    closing = diag_msg(2, 11, ("127.0.0.1", 80), ("0.0.0.0", 0), 700, cookie=7)
    other_inode = diag_msg(2, 10, ("127.0.0.1", 80), ("0.0.0.0", 0), 701, cookie=7)
    kernel = standin_factory([listen + DONE], [listen + closing + other_inode + DONE])
    reader = InetDiagReader(kernel)
    cache: dict[bytes, DiagEntry] = {}
    misses: list[DiagMiss] = []
    assert reader.dump(socket.AF_INET, TCP, cache, [], misses) == 1
    ((sockid, state, inode),) = misses
    cached = SocketRecord(1, 2, 6, "127.0.0.1", 80, "", 0, "LISTEN", 700)
    cache[sockid] = (inode, state, cached)
    out: list[SocketRecord] = []
    misses.clear()
    assert reader.dump(socket.AF_INET, TCP, cache, out, misses) == 3
    assert out == [cached]
    assert [(s, int.from_bytes(i, sys.byteorder)) for _, s, i in misses] == [(11, 700), (10, 701)]


def test_error_message_is_a_netlink_error(standin_factory: Callable[..., KernelStandin]) -> None:
    kernel = standin_factory([error_msg(errno.ENOENT)])
    with pytest.raises(NetlinkError) as caught:
        read_inet_diag(socket.AF_INET, UDP, InetDiagReader(kernel))
    assert caught.value.errno == errno.ENOENT


def test_ack_without_error_is_skipped(standin_factory: Callable[..., KernelStandin]) -> None:
    answer = error_msg(0) + diag_msg(2, 10, ("127.0.0.1", 81), ("0.0.0.0", 0), 801) + DONE
    kernel = standin_factory([answer])
    assert [r.local_port for r in read_inet_diag(2, TCP, InetDiagReader(kernel))] == [81]


def test_truncated_datagram_is_an_error_and_grows_the_buffer(
    standin_factory: Callable[..., KernelStandin],
) -> None:
    many = b"".join(
        diag_msg(2, 1, ("127.0.0.1", 1000 + i), ("127.0.0.1", 80), 900 + i, cookie=i)
        for i in range(800)
    )
    assert len(many) > 65536
    kernel = standin_factory([many + DONE], [many + DONE])
    reader = InetDiagReader(kernel)
    with pytest.raises(NetlinkError, match="truncated"):
        read_inet_diag(2, TCP, reader)
    assert len(read_inet_diag(2, TCP, reader)) == 800


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (nlmsg(SOCK_DIAG_BY_FAMILY, bytes(40)) + DONE, "too short"),
        (struct.pack("=IHHII", 0, NLMSG_NOOP, 0, 1, 0) + DONE, "malformed"),
        (struct.pack("=I", 96) + diag_msg(2, 10, ("127.0.0.1", 82), ("0.0.0.0", 0), 1)[4:], "past"),
        (nlmsg(77, b"") + DONE, "unexpected netlink message type 77"),
        (nlmsg(4, b""), "OVERRUN"),
    ],
    ids=["short-socket-message", "zero-length", "runs-past-datagram", "unknown-type", "overrun"],
)
def test_malformed_answers(
    standin_factory: Callable[..., KernelStandin], answer: bytes, match: str
) -> None:
    kernel = standin_factory([answer])
    with pytest.raises(NetlinkError, match=match):
        read_inet_diag(2, TCP, InetDiagReader(kernel))


def test_end_without_done_and_silence_are_errors(
    standin_factory: Callable[..., KernelStandin],
) -> None:
    ended = standin_factory([diag_msg(2, 10, ("127.0.0.1", 83), ("0.0.0.0", 0), 1)])
    with pytest.raises(NetlinkError, match="no data before NLMSG_DONE"):
        read_inet_diag(2, TCP, InetDiagReader(ended))
    silent = standin_factory([], close_after=False)
    started = time.monotonic()
    with pytest.raises(NetlinkError, match="timed out"):
        read_inet_diag(2, TCP, InetDiagReader(silent, timeout_secs=0.2))
    assert time.monotonic() - started < 2.0


def test_refused_socket_is_a_netlink_error() -> None:
    def refuse() -> socket.socket:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    with pytest.raises(NetlinkError) as caught:
        read_inet_diag(2, TCP, InetDiagReader(refuse))
    assert caught.value.errno == errno.EPERM


# --------------------------------------------------------------------- live


def _netlink_works() -> bool:
    try:
        read_inet_diag(socket.AF_INET, TCP)
    except NetlinkError:
        return False
    return True


needs_netlink = pytest.mark.skipif(not _netlink_works(), reason="sock_diag netlink unavailable")


@pytest.fixture
def live_sockets() -> Iterator[list[socket.socket]]:
    """400 TCP pairs over 127.0.0.1 and ::1, listeners, UDP, a v4-mapped pair."""
    held = open_mixed_sockets(400)
    try:
        yield held
    finally:
        close_with_reset(held)


_Ends = set[tuple[int, int, int]]


def _ports(sockets: list[socket.socket]) -> _Ends:
    """(protocol, local port, remote port or 0) of each socket.

    Records are matched on all three, so another process's socket that
    happens to share a local port number with one of ours is not mistaken
    for ours.
    """
    ends: _Ends = set()
    for sock in sockets:
        protocol = TCP if sock.type == socket.SOCK_STREAM else UDP
        try:
            remote = sock.getpeername()[1]
        except OSError:
            remote = 0
        ends.add((protocol, sock.getsockname()[1], remote))
    return ends


def _psutil_keys(ports: _Ends) -> set[_Key]:
    """psutil.net_connections('inet') of this process on ``ports``, normalised like
    our collectors (psutil gives no inode; its pid comes from the inode in /proc/PID/fd).

    TIME_WAIT entries are left out here and in :func:`_own` (a closed
    connection of another process may have had the same ports).
    """
    keys: set[_Key] = set()
    for conn in psutil.net_connections("inet"):
        protocol = TCP if conn.type == socket.SOCK_STREAM else UDP
        rport = conn.raddr.port if conn.raddr else 0
        if conn.pid != ME or not conn.laddr or (protocol, conn.laddr.port, rport) not in ports:
            continue
        if conn.status == "TIME_WAIT":
            continue
        os_family = normalize_family(conn.family)
        family, local = normalize_address(os_family, conn.laddr.ip)
        remote, rport = ("", 0)
        if conn.raddr:
            remote, rport = normalize_address(os_family, conn.raddr.ip)[1], conn.raddr.port
        state = conn.status if protocol == TCP else ""
        keys.add((conn.pid, family, protocol, local, conn.laddr.port, remote, rport, state))
    return keys


def _own(records: list[SocketRecord], inodes: set[int]) -> list[SocketRecord]:
    """Records of our namespace with one of ``inodes``: on a busy host other
    processes and namespaces hold sockets on the same port numbers."""
    own = own_net_namespace()
    return [r for r in records if r.net_namespace == own and r.socket in inodes]


def _inodes(records: list[SocketRecord]) -> dict[_Key, int | None]:
    return {_key(r): r.socket for r in records}


@needs_netlink
def test_live_netlink_equals_proc_equals_psutil(live_sockets: list[socket.socket]) -> None:
    ports = _ports(live_sockets)
    inodes = socket_inodes(live_sockets)
    via_netlink = LinuxProcCollector()
    via_proc = LinuxProcCollector(netlink=False)
    for _ in range(2):  # cold, then from the caches
        nl = _own(via_netlink.collect(), inodes)
        proc = _own(via_proc.collect(), inodes)
        assert via_netlink.netlink_tables == ("tcp", "tcp6", "udp", "udp6")
        assert via_proc.netlink_tables == ()
        assert {_key(r) for r in nl} == {_key(r) for r in proc} == _psutil_keys(ports)
        assert _inodes(nl) == _inodes(proc)
        assert len(nl) == len(proc) == 800 + 3 + 2 + 4
    keys = {_key(r) for r in nl}
    dual, client = live_sockets[-7], live_sockets[-6]
    dual_port, client_port = dual.getsockname()[1], client.getsockname()[1]
    assert (ME, 10, 6, "::", dual_port, "", 0, "LISTEN") in keys
    # accepted by the dual-stack listener: ::ffff:127.0.0.1 reported as IPv4
    assert (ME, 2, 6, "127.0.0.1", dual_port, "127.0.0.1", client_port, "ESTABLISHED") in keys
    assert {k[7] for k in keys if k[2] == UDP} == {""}
    assert all(k[0] == ME for k in keys)
    assert sorted(r.socket for r in nl) == sorted(inodes)  # each of ours once


@needs_netlink
def test_live_time_wait_has_no_owner_on_both_paths() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        ends = (*client.getsockname(), *client.getpeername())
        client.close()  # active close: the client side goes to TIME_WAIT
        accepted.close()
    own_ns = own_net_namespace()

    def mine(records: list[SocketRecord]) -> list[SocketRecord]:
        # TIME_WAIT has no inode and no owner: our namespace and the 4-tuple,
        # unique in it, find ours where other namespaces reuse the port.
        return [
            r
            for r in records
            if r.net_namespace == own_ns
            and r.protocol == TCP
            and (r.local_address, r.local_port, r.remote_address, r.remote_port) == ends
        ]

    deadline = time.monotonic() + 5
    while True:
        nl = mine(LinuxProcCollector().collect())
        proc = mine(LinuxProcCollector(netlink=False).collect())
        if all(r.state == "TIME_WAIT" for r in nl + proc) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(*_key(r), r.socket) for r in nl] == [(*_key(r), r.socket) for r in proc]
    ((pid, *_, state),) = {_key(r) for r in nl}
    assert (pid, state) == (None, "TIME_WAIT")
    assert nl[0].socket == 0


@needs_netlink
def test_live_churn_keeps_netlink_caches_right() -> None:
    """Sockets come and go (the netlink caches get pruned); records stay right."""
    via_netlink = LinuxProcCollector()
    via_proc = LinuxProcCollector(netlink=False)
    for _round in range(3):
        held: list[socket.socket] = []
        try:
            with socket.create_server(("127.0.0.1", 0), backlog=512) as listener:
                for _ in range(300):
                    held.append(socket.create_connection(listener.getsockname()))
                    held.append(listener.accept()[0])
                inodes = socket_inodes([*held, listener])
                nl = _own(via_netlink.collect(), inodes)
                proc = _own(via_proc.collect(), inodes)
                assert {_key(r) for r in nl} == {_key(r) for r in proc}
                assert len(nl) == 601
        finally:
            close_with_reset(held)
        assert not _own(via_netlink.collect(), inodes)


# ----------------------------------------------------------------- fallback


def _refused() -> socket.socket:
    raise PermissionError(errno.EPERM, "Operation not permitted")


def test_fallback_when_netlink_socket_is_refused(live_sockets: list[socket.socket]) -> None:
    inodes = socket_inodes(live_sockets)
    now = [0.0]
    calls = [0]

    def factory() -> socket.socket:
        calls[0] += 1
        return _refused()

    collector = LinuxProcCollector(
        diag_socket_factory=factory, netlink_retry_secs=30.0, clock=lambda: now[0]
    )
    records = _own(collector.collect(), inodes)
    assert collector.netlink_tables == ()
    assert collector.netlink_failures == 4 and calls[0] == 4
    assert "Operation not permitted" in collector.netlink_error
    proc = _own(LinuxProcCollector(netlink=False).collect(), inodes)
    assert {_key(r) for r in records} == {_key(r) for r in proc}
    assert len(records) == 800 + 3 + 2 + 4
    now[0] = 29.0
    collector.collect()
    assert calls[0] == 4  # not retried before netlink_retry_secs
    now[0] = 30.0
    collector.collect()
    assert calls[0] == 8


class KernelRelay:
    """Socket factory that forwards requests to the real kernel, with faults.

    Each call returns one end of a SOCK_SEQPACKET pair; a thread reads the
    request from the other end and either refuses it like a kernel without
    the protocol's diag handler (NLMSG_ERROR, ENOENT) or relays the kernel's
    real answer, optionally only its first datagram before hanging up.
    """

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.cut_after_first: set[int] = set()
        self._threads: list[threading.Thread] = []

    def __call__(self) -> socket.socket:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        thread = threading.Thread(target=self._serve, args=(theirs,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return mine

    def _serve(self, theirs: socket.socket) -> None:
        with theirs:
            request = theirs.recv(4096)
            protocol = request[17]
            if protocol in self.refuse:
                theirs.send(error_msg(errno.ENOENT))
                return
            with open_diag_socket() as kernel:
                kernel.send(request)
                while True:
                    data = kernel.recv(65536)
                    theirs.send(data)
                    if protocol in self.cut_after_first or _has_done(data):
                        return

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


def _has_done(data: bytes) -> bool:
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return True
        offset += (length + 3) & ~3
    return False


@needs_netlink
def test_fallback_per_table_when_one_protocol_is_refused(
    live_sockets: list[socket.socket],
) -> None:
    ports = _ports(live_sockets)
    inodes = socket_inodes(live_sockets)
    relay = KernelRelay(refuse={UDP})
    collector = LinuxProcCollector(diag_socket_factory=relay)
    try:
        records = _own(collector.collect(), inodes)
        assert collector.netlink_tables == ("tcp", "tcp6")
        assert collector.netlink_failures == 2
        assert "No such file or directory" in collector.netlink_error
        proc = _own(LinuxProcCollector(netlink=False).collect(), inodes)
        assert {_key(r) for r in records} == {_key(r) for r in proc} == _psutil_keys(ports)
        assert len([r for r in records if r.protocol == UDP]) == 4
    finally:
        relay.join()


@needs_netlink
def test_dump_cut_short_drops_its_partial_records(live_sockets: list[socket.socket]) -> None:
    inodes = socket_inodes(live_sockets)
    relay = KernelRelay(refuse=set())
    collector = LinuxProcCollector(diag_socket_factory=relay)
    try:
        first = _own(collector.collect(), inodes)
        assert collector.netlink_tables == ("tcp", "tcp6", "udp", "udp6")
        relay.cut_after_first = {TCP}  # the next TCP dumps lose all but one datagram
        again = collector.collect()
        assert list(collector.netlink_tables) == ["udp", "udp6"]
        assert "no data before NLMSG_DONE" in collector.netlink_error
        seen = [r.socket for r in again if r.socket in inodes]
        assert sorted(seen) == sorted(inodes)  # once each: the cut dumps' cached hits dropped
        assert {_key(r) for r in _own(again, inodes)} == {_key(r) for r in first}
        assert len(first) == 800 + 3 + 2 + 4
    finally:
        relay.join()
