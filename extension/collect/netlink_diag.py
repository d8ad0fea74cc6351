"""NETLINK_SOCK_DIAG (inet_diag) reader: TCP and UDP sockets of our own netns.

The interface ``ss`` uses: one ``SOCK_DIAG_BY_FAMILY`` dump request per
(address family, protocol), answered by a multipart stream of binary
``inet_diag_msg`` records. For TCP it is far cheaper than reading
``/proc/net/tcp{,6}``, whose reader walks and formats the kernel's whole
socket hash table as text on every read (about 4.7 ms per file on a host with
almost no sockets; the dump of the same table costs about 0.2 ms).

Sources of the layouts and rules used here:

* Linux uapi ``linux/netlink.h``: ``struct nlmsghdr`` (u32 len, u16 type,
  u16 flags, u32 seq, u32 pid; 16 bytes, host byte order), messages at
  4-byte aligned offsets (``NLMSG_ALIGN``), ``NLM_F_REQUEST`` 0x1,
  ``NLM_F_MULTI`` 0x2, ``NLM_F_DUMP`` 0x300, ``NLMSG_NOOP`` 1,
  ``NLMSG_ERROR`` 2 (payload: a negative errno as int, then the request
  header), ``NLMSG_DONE`` 3 (ends a multipart dump), ``NLMSG_OVERRUN`` 4.
* ``linux/sock_diag.h``: ``SOCK_DIAG_BY_FAMILY`` 20; protocol number
  ``NETLINK_SOCK_DIAG`` 4 (``linux/netlink.h``).
* ``linux/inet_diag.h``: ``struct inet_diag_req_v2`` (u8 sdiag_family,
  u8 sdiag_protocol, u8 idiag_ext, u8 pad, u32 idiag_states, then a
  48-byte ``struct inet_diag_sockid``) and ``struct inet_diag_msg`` (u8
  family, state, timer, retrans; the sockid: be16 sport, be16 dport, be32
  src[4], be32 dst[4], u32 if, u32 cookie[2]; then u32 expires, rqueue,
  wqueue, uid, inode: 72 bytes), followed by attributes we do not request
  and skip.
* ``include/net/tcp_states.h``: state numbers (1 ESTABLISHED … 11 CLOSING,
  12 NEW_SYN_RECV, 13 BOUND_INACTIVE), the same numbers /proc/net/tcp
  prints in its ``st`` column.
* Kernel behaviour (net/netlink/af_netlink.c ``netlink_dump`` and
  ``netlink_recvmsg``; net/ipv4/inet_diag.c; net/ipv4/udp_diag.c): one
  dump datagram is at most about 32 KiB; ``MSG_TRUNC`` makes ``recv``
  return a datagram's full length even when the buffer is shorter; request
  sockets are reported as SYN_RECV and TIME_WAIT sockets with inode 0, as in
  /proc/net/tcp; an AF_INET6 dump reports IPv4 peers of dual-stack sockets
  as IPv4-mapped addresses (``::ffff:a.b.c.d``), as /proc/net/tcp6 does.
* netlink(7) and sock_diag(7) man pages; iproute2 ``misc/ss.c`` sends the
  same request (``inet_diag_req_v2`` with ``NLM_F_DUMP``).

A netlink socket reports the network namespace it was created in. Sockets
of other namespaces would need ``setns(2)`` before creating it, which
Python 3.11's ``os`` module lacks (``os.setns`` is 3.12+), so the collector
keeps reading ``/proc/<pid>/net/*`` for those (see linux_proc.py).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple

from extension.collect.normalize import normalize_address
from extension.model import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = [
    "DIAG_MESSAGE_BYTES",
    "NETLINK_SOCK_DIAG",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLMSG_NOOP",
    "NLMSG_OVERRUN",
    "NLM_F_DUMP",
    "NLM_F_REQUEST",
    "SOCK_DIAG_BY_FAMILY",
    "TCP_STATES_MASK",
    "TCP_STATE_NAMES",
    "TCP_TIME_WAIT",
    "UDP_STATES_MASK",
    "AddressMemo",
    "DiagEntry",
    "DiagMiss",
    "DiagSocket",
    "InetDiagReader",
    "NetlinkError",
    "decode_sockid",
    "lookup_socket",
    "open_diag_socket",
    "read_inet_diag",
]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

TCP_STATE_NAMES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
"""Kernel TCP state number (include/net/tcp_states.h) to the name psutil and
the /proc path report."""

TCP_STATES_MASK = sum(1 << state for state in range(1, 13))
TCP_TIME_WAIT = 6
"""``idiag_states`` for TCP: every state 1-12 (12, NEW_SYN_RECV, selects the
request sockets the kernel reports as SYN_RECV). Bit 13, BOUND_INACTIVE
(Linux 6.5+: bound, neither listening nor connected), is left out because
/proc/net/tcp and psutil do not list such sockets either."""

UDP_STATES_MASK = 0xFFFFFFFF
"""``idiag_states`` for UDP: all (unconnected sockets are in state 7, CLOSE;
connected ones in 1, ESTABLISHED)."""

_UNKNOWN_STATE = "UNKNOWN"
_ADDRESS_CACHE_LIMIT = 65536
_RECV_BYTES = 65536
"""Receive buffer: twice the largest dump datagram the kernel builds."""

_HEADER = struct.Struct("=IHHII")
"""struct nlmsghdr: len, type, flags, seq, pid (host byte order)."""
_REQUEST = struct.Struct("=IHHIIBBBBI48x")
"""nlmsghdr + struct inet_diag_req_v2 with an all-zero sockid (dump all)."""
_MESSAGE = struct.Struct("=IH11xB2x48s16x4s")
"""nlmsghdr + struct inet_diag_msg, picking: nlmsg_len, nlmsg_type,
idiag_state, the 48-byte sockid (ports, addresses, if, cookie) and the raw
4 bytes of idiag_inode."""
DIAG_MESSAGE_BYTES = _MESSAGE.size
"""Bytes of nlmsghdr + inet_diag_msg (88): the least a socket message has."""
_SOCKID = struct.Struct("!HH16s16s12x")
"""struct inet_diag_sockid: be16 sport, be16 dport, src, dst (16 bytes each,
network order; IPv4 in the first 4), then if and cookie (skipped)."""
_ERRNO = struct.Struct("=i")
_INODE = struct.Struct("=I")
_EXACT_REQUEST = struct.Struct("=IHHIIBBBBIHH16s16sIII")
"""nlmsghdr + struct inet_diag_req_v2 naming one socket: the sockid's ports
and addresses in network order (ports passed through ``socket.htons``), then if
and the cookie (both halves
INET_DIAG_NOCOOKIE: match by addresses and ports alone)."""
_NOCOOKIE = 0xFFFFFFFF
_UID_INODE = struct.Struct("=II")
"""idiag_uid and idiag_inode, at byte 80 of an nlmsghdr + inet_diag_msg."""

DiagEntry = tuple[bytes, int, SocketRecord | None]
"""A cache entry for one socket: (raw idiag_inode bytes, idiag_state, the
record built for it, or None when the socket yields no record)."""
DiagMiss = tuple[bytes, int, bytes]
"""A socket message that missed the cache: (sockid bytes, idiag_state, raw
idiag_inode bytes)."""


class NetlinkError(Exception):
    """A sock_diag dump could not be done or its answer was malformed.

    Attributes:
        errno: the errno the kernel or the socket call reported, or None.
    """

    def __init__(self, message: str, error_number: int | None = None) -> None:
        super().__init__(message)
        self.errno = error_number


def open_diag_socket() -> socket.socket:
    """A new ``AF_NETLINK`` / ``SOCK_RAW`` / ``NETLINK_SOCK_DIAG`` socket.

    Raises:
        OSError: the kernel or a sandbox refuses it (EPROTONOSUPPORT,
            EAFNOSUPPORT, EPERM, EACCES), or this is not Linux.
    """
    family = getattr(socket, "AF_NETLINK", None)
    if family is None:
        raise OSError(errno.EAFNOSUPPORT, "AF_NETLINK is not available on this platform")
    return socket.socket(family, socket.SOCK_RAW, NETLINK_SOCK_DIAG)


class InetDiagReader:
    """Dumps the TCP or UDP sockets of one address family over sock_diag.

    One netlink socket per dump, closed afterwards, so an abandoned or failed
    dump never leaves messages behind for the next one.

    Args:
        socket_factory: returns a connected-to-the-kernel netlink socket
            (the seam tests use to inject failures or relay a real dump).
        timeout_secs: seconds to wait for each datagram before giving up.

    Attributes:
        dumps: dumps completed so far.
        datagrams: datagrams received so far.
    """

    def __init__(
        self,
        socket_factory: Callable[[], socket.socket] = open_diag_socket,
        timeout_secs: float = 5.0,
    ) -> None:
        self._factory = socket_factory
        self._timeout = timeout_secs
        self._buffer = bytearray(_RECV_BYTES)
        self._seq = 0
        self.dumps = 0
        self.datagrams = 0

    def dump(
        self,
        family: int,
        protocol: int,
        cache: dict[bytes, DiagEntry],
        out: list[SocketRecord],
        misses: list[DiagMiss],
        *,
        states: int | None = None,
    ) -> int:
        """Dump every socket of (family, protocol) in our network namespace.

        For each socket message, a cache entry keyed by its sockid whose
        inode and state still match yields its record (appended to ``out``;
        nothing when the entry's record is None); any other message is
        appended to ``misses`` for the caller to decode. ``cache`` is only
        read.

        Args:
            family: ``socket.AF_INET`` or ``socket.AF_INET6``.
            protocol: 6 (TCP) or 17 (UDP).
            cache: sockid bytes -> :data:`DiagEntry`.
            out: receives cached records.
            misses: receives :data:`DiagMiss` tuples.
            states: ``idiag_states`` bit mask (bit n = state n); default
                :data:`TCP_STATES_MASK` for TCP, :data:`UDP_STATES_MASK` for UDP.

        Returns:
            number of socket messages received.

        Raises:
            NetlinkError: the socket could not be opened or used, the kernel
                answered NLMSG_ERROR or NLMSG_OVERRUN, a datagram was
                truncated, or a message was malformed. ``out`` and
                ``misses`` may then hold part of the dump: the caller drops
                it.
        """
        if states is None:
            states = TCP_STATES_MASK if protocol == IPPROTO_TCP else UDP_STATES_MASK
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        request = _REQUEST.pack(
            _REQUEST.size,
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            self._seq,
            0,
            family,
            protocol,
            0,
            0,
            states,
        )
        try:
            sock = self._factory()
        except OSError as err:
            raise NetlinkError(f"cannot open a sock_diag socket: {err}", err.errno) from err
        try:
            sock.settimeout(self._timeout)
            sock.send(request)
            return self._receive(sock, cache, out, misses)
        except OSError as err:
            raise NetlinkError(f"sock_diag dump failed: {err}", err.errno) from err
        finally:
            sock.close()

    def _receive(
        self,
        sock: socket.socket,
        cache: dict[bytes, DiagEntry],
        out: list[SocketRecord],
        misses: list[DiagMiss],
    ) -> int:
        buffer = self._buffer
        size = len(buffer)
        unpack = _MESSAGE.unpack_from
        get = cache.get
        append = out.append
        miss = misses.append
        minimum = DIAG_MESSAGE_BYTES
        count = 0
        while True:
            end = sock.recv_into(buffer, size, socket.MSG_TRUNC)
            self.datagrams += 1
            if end > size:
                self._buffer = bytearray(2 * end)  # for the next dump
                raise NetlinkError(f"sock_diag datagram of {end} bytes truncated to {size}")
            if end == 0:
                raise NetlinkError("sock_diag socket returned no data before NLMSG_DONE")
            offset = 0
            while offset < end:
                if end - offset >= minimum:
                    length, kind, state, sockid, inode = unpack(buffer, offset)
                    if kind == SOCK_DIAG_BY_FAMILY and length >= minimum:
                        entry = get(sockid)
                        if entry is not None and entry[0] == inode and entry[1] == state:
                            record = entry[2]
                            if record is not None:
                                append(record)
                        else:
                            miss((sockid, state, inode))
                        count += 1
                        offset += (length + 3) & ~3
                        continue
                if self._control(buffer, offset, end):
                    self.dumps += 1
                    return count
                offset += (_HEADER.unpack_from(buffer, offset)[0] + 3) & ~3
            if offset != end:
                raise NetlinkError(f"sock_diag message runs past its datagram ({offset} > {end})")

    @staticmethod
    def _control(buffer: bytearray, offset: int, end: int) -> bool:
        """Handle a message other than a full socket message.

        Returns:
            True at NLMSG_DONE; False for messages to skip (NLMSG_NOOP, an
            NLMSG_ERROR acknowledgement with error 0).

        Raises:
            NetlinkError: NLMSG_ERROR with an error, NLMSG_OVERRUN, an unknown
                type, a socket message shorter than inet_diag_msg, or a
                header that does not fit.
        """
        if end - offset < _HEADER.size:
            raise NetlinkError(f"sock_diag datagram ends inside a header at {offset}")
        length, kind, _, _, _ = _HEADER.unpack_from(buffer, offset)
        if length < _HEADER.size or offset + length > end:
            raise NetlinkError(f"sock_diag message length {length} at {offset} is malformed")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_NOOP:
            return False
        if kind == NLMSG_ERROR:
            if length < _HEADER.size + _ERRNO.size:
                raise NetlinkError("sock_diag NLMSG_ERROR without an error code")
            code = -_ERRNO.unpack_from(buffer, offset + _HEADER.size)[0]
            if code == 0:
                return False
            raise NetlinkError(f"sock_diag request refused: {os.strerror(code)}", code)
        if kind == NLMSG_OVERRUN:
            raise NetlinkError("sock_diag reported NLMSG_OVERRUN (data lost)")
        if kind == SOCK_DIAG_BY_FAMILY:
            raise NetlinkError(f"sock_diag socket message of {length} bytes is too short")
        raise NetlinkError(f"unexpected netlink message type {kind}")


class DiagSocket(NamedTuple):
    """One socket found by :func:`lookup_socket`.

    Attributes:
        inode: its inode.
        uid: the uid that owns it.
        connected: False when it is an unconnected UDP socket that would
            receive from the remote end asked for, not a socket connected to it.
    """

    inode: int
    uid: int
    connected: bool


def lookup_socket(
    sock: socket.socket,
    family: int,
    protocol: int,
    local: tuple[bytes, int],
    remote: tuple[bytes, int],
    *,
    sequence: int = 1,
) -> DiagSocket | None:
    """Ask sock_diag for one socket by its addresses and ports (no dump).

    The kernel looks the socket up as it would route a packet to it
    (net/ipv4/inet_diag.c ``inet_diag_find_one_icsk``, net/ipv4/udp_diag.c
    ``udp_dump_one``) and answers with its ``inet_diag_msg``, or with
    NLMSG_ERROR ENOENT when there is none; an exact request gets no
    NLMSG_DONE and no acknowledgement. For UDP the kernel reads the sockid
    as a received packet's (source = the remote end), so the two ends are
    swapped here; TCP takes them as the socket's own (source = local).

    Args:
        sock: an open ``NETLINK_SOCK_DIAG`` socket of the namespace to search
            (see :func:`open_diag_socket`); used by one thread at a time.
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        protocol: 6 (TCP) or 17 (UDP).
        local: (local address, 4 or 16 bytes in network order, local port).
        remote: (remote address, same size, remote port).
        sequence: the request's sequence number, echoed in the answer.

    Returns:
        the socket found, or None when there is none. For UDP the kernel may
        answer with an unconnected socket bound to the local end, which would
        receive from that remote end: ``connected`` is then False.

    Raises:
        NetlinkError: the request or its answer failed otherwise.
    """
    (local_address, local_port), (remote_address, remote_port) = local, remote
    if protocol == IPPROTO_UDP:
        local_address, local_port, remote_address, remote_port = (
            remote_address, remote_port, local_address, local_port
        )  # fmt: skip
    request = _EXACT_REQUEST.pack(
        _EXACT_REQUEST.size,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST,
        sequence & 0xFFFFFFFF,
        0,
        family,
        protocol,
        0,
        0,
        0xFFFFFFFF,
        socket.htons(local_port),
        socket.htons(remote_port),
        local_address.ljust(16, b"\0"),
        remote_address.ljust(16, b"\0"),
        0,
        _NOCOOKIE,
        _NOCOOKIE,
    )
    try:
        sock.send(request)
        while True:
            answer = sock.recv(8192)
            if len(answer) < _HEADER.size:
                raise NetlinkError(f"sock_diag answer of {len(answer)} bytes is too short")
            length, kind, _, seq, _ = _HEADER.unpack_from(answer, 0)
            if seq == sequence & 0xFFFFFFFF:
                break
    except OSError as err:
        raise NetlinkError(f"sock_diag lookup failed: {err}", err.errno) from err
    if kind == NLMSG_ERROR:
        code = -_ERRNO.unpack_from(answer, _HEADER.size)[0] if len(answer) >= 20 else 0
        if code == errno.ENOENT:
            return None
        raise NetlinkError(f"sock_diag lookup refused: {os.strerror(code)}", code)
    if kind != SOCK_DIAG_BY_FAMILY or length < DIAG_MESSAGE_BYTES or len(answer) < length:
        raise NetlinkError(f"unexpected sock_diag answer (type {kind}, {length} bytes)")
    sockid = answer[_HEADER.size + 4 : _HEADER.size + 52]
    ports = (remote_port, local_port) if protocol == IPPROTO_UDP else (local_port, remote_port)
    uid, inode = _UID_INODE.unpack_from(answer, 80)
    return DiagSocket(inode, uid, _SOCKID.unpack(sockid)[:2] == ports)


def decode_sockid(family: int, sockid: bytes) -> tuple[bytes, int, bytes, int]:
    """Split a 48-byte ``inet_diag_sockid``.

    Args:
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        sockid: the bytes as received.

    Returns:
        (local address bytes, local port, remote address bytes, remote
        port): addresses in network order, 4 bytes for IPv4, 16 for IPv6.
    """
    sport, dport, src, dst = _SOCKID.unpack(sockid)
    if family == socket.AF_INET:
        return src[:4], sport, dst[:4], dport
    return src, sport, dst, dport


class AddressMemo:
    """Memoised ``(family, text)`` of raw addresses, IPv4-mapped unmapped.

    Holds at most 65536 addresses; when full it starts over.
    """

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[int, str]] = {}

    def get(self, raw: bytes) -> tuple[int, str]:
        """(family, text) of a 4-byte IPv4 or 16-byte IPv6 address.

        ``::ffff:a.b.c.d`` becomes ``(2, 'a.b.c.d')``; other IPv6 addresses
        keep family 10 in ``socket.inet_ntop``'s text form.

        Raises:
            ValueError: ``raw`` is neither 4 nor 16 bytes long.
        """
        known = self._known.get(raw)
        if known is None:
            if len(self._known) >= _ADDRESS_CACHE_LIMIT:
                self._known.clear()
            if len(raw) == 4:
                known = (AF_INET, socket.inet_ntop(socket.AF_INET, raw))
            else:
                known = normalize_address(AF_INET6, socket.inet_ntop(socket.AF_INET6, raw))
            self._known[raw] = known
        return known


def read_inet_diag(
    family: int,
    protocol: int,
    reader: InetDiagReader | None = None,
    net_namespace: int | None = None,
) -> list[SocketRecord]:
    """Dump one (family, protocol) and decode every socket (for tools, tests).

    The collector uses :class:`InetDiagReader` with its caches instead.

    Args:
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.
        protocol: 6 (TCP) or 17 (UDP).
        reader: reader to use (a new one by default).
        net_namespace: value for every record's ``net_namespace``.

    Returns:
        one SocketRecord per socket with a non-zero local port, ``pid=None``,
        in dump order. Like the /proc path: IPv4-mapped addresses become IPv4
        (family 2), a remote end with port 0 is ``('', 0)``, UDP state is ''.

    Raises:
        NetlinkError: as :meth:`InetDiagReader.dump`.
    """
    misses: list[DiagMiss] = []
    (reader or InetDiagReader()).dump(family, protocol, {}, [], misses)
    addresses = AddressMemo()
    records: list[SocketRecord] = []
    for sockid, state, inode in misses:
        local, lport, remote, rport = decode_sockid(family, sockid)
        if not lport:
            continue
        fam, local_address = addresses.get(local)
        records.append(
            SocketRecord(
                pid=None,
                family=fam,
                protocol=protocol,
                local_address=local_address,
                local_port=lport,
                remote_address=addresses.get(remote)[1] if rport else "",
                remote_port=rport,
                state=TCP_STATE_NAMES.get(state, _UNKNOWN_STATE) if protocol != IPPROTO_UDP else "",
                socket=_INODE.unpack(inode)[0],
                net_namespace=net_namespace,
            )
        )
    return records
