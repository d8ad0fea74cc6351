"""DNS answers this host receives, read with packet sockets, one per network namespace.

**What is read.** A packet socket (``AF_PACKET``, ``SOCK_DGRAM``, every
protocol; packet(7)) receives a copy of every packet of its network
namespace, on every interface, before any firewall. A classic BPF filter
attached with ``SO_ATTACH_FILTER`` (socket(7); the kernel's
Documentation/networking/filter.rst) runs in the kernel on each packet and
lets through only IPv4 or IPv6 UDP and TCP packets from source port 53 that
the namespace receives: answers from DNS servers, and from local stub
resolvers such as systemd-resolved's 127.0.0.53 (over loopback every packet
passes twice, once as sent and once as received; the filter keeps the
received copy, and it drops everything this namespace sends, so answers a
DNS server on this host gives to others are not read). Nothing else reaches
user space.

**Namespaces.** One socket per network namespace a process is in
(``/proc/<pid>/ns/net``) or that is mounted (``ip netns add``), opened from
inside it with ``setns(2)`` (:func:`extension.collect.netns.enter_netns`):
a packet socket stays in the namespace it was made in. They are looked for
every ``rescan_secs``; a socket keeps its namespace alive until the next
look finds it gone and closes the socket.

**Parsing.** UDP payloads, and TCP segments that hold whole messages after
their two-octet length prefix (RFC 1035 §4.2.2, RFC 7766), go to
:func:`extension.collect.dns_wire.parse_answer`. IP fragments after the
first, and an answer spread over several TCP segments, are counted and
skipped.

**Timing.** The reader drains the sockets every ``interval_secs``, and the
table drains them again before a row is first served, so an answer the
kernel delivered before a connection began is known when its row is made.
Each packet carries the kernel's receive time (``SO_TIMESTAMPNS``,
socket(7)) on the wall clock; the kernel events' times are monotonic
times put on the wall clock with the offset read as they are read
(:mod:`extension.collect.linux_events`), so the two agree to within what
the wall clock is slewed in between (microseconds).

Errors are translated here: :class:`DnsUnavailableError` when no socket can
be opened at all (no ``CAP_NET_RAW``, not Linux), a reason in
:class:`DnsStats` when only some namespaces can be read.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from extension.collect.dns_wire import parse_answer
from extension.collect.netns import NetnsError, enter_netns, nsfs_mounts, own_netns_fd
from extension.enrich.names import NameCache

__all__ = [
    "DEFAULT_INTERVAL_SECS",
    "DEFAULT_RESCAN_SECS",
    "DnsCapture",
    "DnsStats",
    "DnsUnavailableError",
    "answer_filter",
]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECS: Final = 0.1
DEFAULT_RESCAN_SECS: Final = 5.0
RCVBUF_BYTES: Final = 4 << 20
"""Kernel receive buffer per socket: some thousands of answers between two drains."""

ETH_P_ALL: Final = 0x0003
ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
SO_ATTACH_FILTER: Final = 26
SO_TIMESTAMPNS: Final = 35
"""SO_TIMESTAMPNS_OLD, also its control message type (include/uapi/asm-generic/socket.h)."""
SOL_PACKET: Final = 263
PACKET_STATISTICS: Final = 6
PACKET_OUTGOING: Final = 4
_SKF_AD_OFF: Final = -0x1000
_SKF_AD_PROTOCOL: Final = 0
_SKF_AD_PKTTYPE: Final = 4
"""include/uapi/linux/filter.h, if_packet.h, if_ether.h."""
_IPPROTO_TCP: Final = 6
_IPPROTO_UDP: Final = 17
_SNAP: Final = 0x40000
_TIMESPEC: Final = struct.Struct("@ll")
_CMSG_SPACE: Final = 64


class DnsUnavailableError(Exception):
    """No DNS answers can be read on this host; the message says why."""


@dataclass(frozen=True, slots=True)
class DnsStats:
    """Counters of the capture, as ``tracked_connections_stats`` shows them.

    Attributes:
        state: 'on', 'degraded' (some namespaces cannot be read) or 'off'.
        reason: why it is off or degraded, '' when on.
        namespaces: network namespaces being read.
        packets_read: packets the filter let through and the reader read.
        packets_dropped: packets the kernel dropped because a socket's
            buffer was full (PACKET_STATISTICS tp_drops).
        answers_parsed: answers that gave a name and addresses.
        messages_skipped: packets that held no usable answer: an error
            rcode, no question, a fragment, a partial TCP message, malformed.
        cache_size: (namespace, address) pairs remembered.
    """

    state: str
    reason: str
    namespaces: int = 0
    packets_read: int = 0
    packets_dropped: int = 0
    answers_parsed: int = 0
    messages_skipped: int = 0
    cache_size: int = 0


def answer_filter() -> bytes:
    """The classic BPF program, as ``struct sock_fprog``'s instructions (8 octets each).

    For a ``SOCK_DGRAM`` packet socket, offset 0 is the network header.
    Accepts (whole packet): not sent by this namespace, IPv4 (not a later
    fragment) or IPv6 (no extension header), UDP or TCP, source port 53.
    """
    ld_w, ld_h, ld_b = 0x20, 0x28, 0x30
    ldx_msh, ld_h_ind = 0xB1, 0x48
    jeq, jset, ret = 0x15, 0x45, 0x06
    ad = 1 << 32
    program: list[tuple[int, int | str, int | str, int] | str] = [
        (ld_w, 0, 0, ad + _SKF_AD_OFF + _SKF_AD_PKTTYPE),
        (jeq, "drop", 0, PACKET_OUTGOING),
        (ld_w, 0, 0, ad + _SKF_AD_OFF + _SKF_AD_PROTOCOL),
        (jeq, "ipv4", 0, ETH_P_IP),
        (jeq, "ipv6", "drop", ETH_P_IPV6),
        "ipv4",
        (ld_b, 0, 0, 9),
        (jeq, "v4ports", 0, _IPPROTO_UDP),
        (jeq, "v4ports", "drop", _IPPROTO_TCP),
        "v4ports",
        (ld_h, 0, 0, 6),
        (jset, "drop", 0, 0x1FFF),
        (ldx_msh, 0, 0, 0),
        (ld_h_ind, 0, 0, 0),
        (jeq, "accept", "drop", 53),
        "ipv6",
        (ld_b, 0, 0, 6),
        (jeq, "v6ports", 0, _IPPROTO_UDP),
        (jeq, "v6ports", "drop", _IPPROTO_TCP),
        "v6ports",
        (ld_h, 0, 0, 40),
        (jeq, "accept", "drop", 53),
        "accept",
        (ret, 0, 0, _SNAP),
        "drop",
        (ret, 0, 0, 0),
    ]
    labels: dict[str, int] = {}
    code: list[tuple[int, int | str, int | str, int]] = []
    for op in program:
        if isinstance(op, str):
            labels[op] = len(code)
        else:
            code.append(op)
    out = bytearray()
    for index, (op_code, jt, jf, k) in enumerate(code):
        jt_n = labels[jt] - index - 1 if isinstance(jt, str) else jt
        jf_n = labels[jf] - index - 1 if isinstance(jf, str) else jf
        out += struct.pack("=HBBI", op_code, jt_n, jf_n, k % (1 << 32))
    return bytes(out)


def open_answer_socket() -> socket.socket:
    """A non-blocking packet socket in the calling thread's namespace, filter attached.

    Raises:
        OSError: the socket cannot be made (EPERM without CAP_NET_RAW) or
            the filter not attached.
    """
    program = answer_filter()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    try:
        # The filter before anything else: packets queued before it would pass unfiltered,
        # so they are read and thrown away once it is on.
        code = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(1)
    except BaseException:
        sock.close()
        raise
    return sock


def _dropped(sock: socket.socket) -> int:
    """Packets dropped since the last call (the kernel resets the counters on read)."""
    try:
        _packets, drops = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0
    return int(drops)


class DnsCapture:
    """Reads DNS answers in every network namespace and fills a :class:`NameCache`.

    Args:
        names: where answers go.
        interval_secs: seconds between two drains of the sockets.
        rescan_secs: seconds between two looks for network namespaces.
        proc_root: procfs mount point.
        clock: wall clock, seconds since the Unix epoch.
    """

    def __init__(
        self,
        names: NameCache,
        interval_secs: float = DEFAULT_INTERVAL_SECS,
        rescan_secs: float = DEFAULT_RESCAN_SECS,
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.names = names
        self.interval_secs = interval_secs
        self.rescan_secs = rescan_secs
        self._root = proc_root
        self._clock = clock
        self._sockets: dict[int, socket.socket] = {}
        self._own_ns: int | None = None
        self._home_fd: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._since = 0.0
        self._buffer = bytearray(0x10000)
        self._rescanned = 0.0
        self._reason = ""
        self._failed: dict[int, str] = {}
        self._read = 0
        self._dropped = 0
        self._parsed = 0
        self._skipped = 0
        self.running = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the socket of our own namespace, then read in a background thread.

        Raises:
            DnsUnavailableError: not even our own namespace can be read.
        """
        if not sys.platform.startswith("linux"):
            raise DnsUnavailableError("DNS answers are read with Linux packet sockets only")
        try:
            self._own_ns = os.stat(f"{self._root}/self/ns/net").st_ino
            self._sockets[self._own_ns] = open_answer_socket()
        except PermissionError as err:
            raise DnsUnavailableError(
                f"reading DNS answers needs CAP_NET_RAW (a packet socket): {err}"
            ) from err
        except OSError as err:
            raise DnsUnavailableError(f"cannot open a packet socket: {err}") from err
        self._since = self._clock()
        self.running = True
        self.rescan()
        self._thread = threading.Thread(target=self._run, name="dns", daemon=True)
        self._thread.start()

    def turn_off(self, reason: str) -> None:
        """Record why the capture does not run (instead of :meth:`start`)."""
        with self._lock:
            self._reason = reason

    def stop(self) -> None:
        """Stop reading and close every socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets.values():
                sock.close()
            self._sockets.clear()
            if self._home_fd is not None:
                os.close(self._home_fd)
                self._home_fd = None
            self.running = False

    def stats(self) -> DnsStats:
        """A snapshot of the counters."""
        with self._lock:
            reason = self._reason
            if self.running and self._failed:
                first = next(iter(self._failed.values()))
                reason = f"{len(self._failed)} network namespace(s) not read: {first}"
            state = "off" if not self.running else ("degraded" if self._failed else "on")
            return DnsStats(
                state=state,
                reason=reason,
                namespaces=len(self._sockets),
                packets_read=self._read,
                packets_dropped=self._dropped,
                answers_parsed=self._parsed,
                messages_skipped=self._skipped,
                cache_size=self.names.size,
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_secs):
            try:
                self.drain()
                if time.monotonic() - self._rescanned >= self.rescan_secs:
                    self.rescan()
            except Exception:
                # One bad read must not end reading; the next drain retries.
                log.exception("unexpected error while reading DNS answers")
                self._stop.wait(1.0)

    # ------------------------------------------------------------ namespaces

    def rescan(self) -> None:
        """Open a socket in each network namespace not read yet; close those of gone ones."""
        self._rescanned = time.monotonic()
        found = self._namespaces()
        with self._lock:
            for ns in [ns for ns in self._sockets if ns not in found and ns != self._own_ns]:
                self._sockets.pop(ns).close()
            for ns in [ns for ns in self._failed if ns not in found]:
                del self._failed[ns]
            for ns, path in found.items():
                if ns in self._sockets or ns in self._failed:
                    continue
                try:
                    self._sockets[ns] = self._open_in(path)
                except (NetnsError, OSError) as err:
                    self._failed[ns] = str(err)

    def _namespaces(self) -> dict[int, str]:
        """Network namespace inode -> a path to its nsfs file, for every one found."""
        found: dict[int, str] = {}
        root = self._root
        for inode, mount in nsfs_mounts(f"{root}/self/mountinfo").items():
            found.setdefault(inode, mount)
        try:
            pids = [p for p in os.listdir(root) if p.isdigit()]
        except OSError:
            return found
        for pid in pids:
            path = f"{root}/{pid}/ns/net"
            try:
                inode = os.stat(path).st_ino
            except OSError:
                continue
            found.setdefault(inode, path)
        return found

    def _open_in(self, path: str) -> socket.socket:
        """A socket opened from inside the namespace at ``path``."""
        if self._home_fd is None:
            self._home_fd = own_netns_fd(self._root)
        with enter_netns(path, self._home_fd):
            return open_answer_socket()

    # --------------------------------------------------------------- reading

    def drain(self) -> int:
        """Read every packet the sockets hold now and remember their answers.

        Returns:
            the number of packets read.
        """
        with self._lock:
            began = self._clock()
            since, self._since = self._since, began
            total = 0
            names = self.names
            buffer = self._buffer
            view = memoryview(buffer)
            unpack = _TIMESPEC.unpack_from
            for ns, sock in self._sockets.items():
                packets: list[tuple[bytes, float]] = []
                recv = sock.recvmsg_into
                try:
                    while True:
                        size, ancillary, _flags, _address = recv([buffer], _CMSG_SPACE)
                        arrived = since
                        for level, kind, data in ancillary:
                            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                                secs, nsecs = unpack(data)
                                arrived = secs + nsecs / 1e9
                        packets.append((bytes(view[:size]), arrived))
                except BlockingIOError:
                    pass
                except OSError as err:
                    log.debug("reading DNS answers in namespace %s: %s", ns, err)
                if not packets:
                    continue
                total += len(packets)
                self._dropped += _dropped(sock)
                for packet, arrived in packets:
                    self._take(ns, packet, arrived, names)
            self._read += total
            return total

    def _take(self, ns: int, packet: bytes, arrived: float, names: NameCache) -> None:
        """Parse one filtered packet (IP header onwards) and remember its answers."""
        try:
            version = packet[0] >> 4
            if version == 4:
                header = (packet[0] & 0x0F) * 4
                end = packet[2] << 8 | packet[3]
                if packet[6] & 0x20:  # more fragments: the message is not whole
                    self._skipped += 1
                    return
                protocol = packet[9]
            elif version == 6:
                header = 40
                end = 40 + (packet[4] << 8 | packet[5])
                protocol = packet[6]
            else:
                self._skipped += 1
                return
            port = packet[header + 2] << 8 | packet[header + 3]
            if protocol == _IPPROTO_UDP:
                messages = [packet[header + 8 : end]]
            else:
                offset = header + (packet[header + 12] >> 4) * 4
                if offset >= end:
                    return  # a handshake or a bare acknowledgement: nothing to read
                messages = _tcp_messages(packet[offset:end])
                if not messages:
                    self._skipped += 1
                    return
        except IndexError:
            self._skipped += 1
            return
        client = (ns, protocol, port)
        for message in messages:
            answer = parse_answer(message)
            if answer is None or not answer[1]:
                self._skipped += 1
                continue
            self._parsed += 1
            names.add(ns, answer[0], answer[1], arrived, client)


def _tcp_messages(stream: bytes) -> list[bytes]:
    """Whole DNS messages in one TCP segment (each after its 2-octet length); [] if partial."""
    out = []
    pos, end = 0, len(stream)
    while pos + 2 <= end:
        length = stream[pos] << 8 | stream[pos + 1]
        if pos + 2 + length > end:
            return []
        out.append(stream[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return out if pos == end else []
