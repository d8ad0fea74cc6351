"""Linux kernel event source: every TCP/UDP connection and attempt, as it happens.

Sampling sees only what exists at the sample instant. This source reads the
kernel's own reports of connections, through ``perf_event_open`` on
tracepoints (perf.py), so a connection that lives a millisecond, a refused
attempt and a single UDP datagram are all seen, with the task that made
them. It needs root (CAP_PERFMON or CAP_SYS_ADMIN), tracefs, the host pid
namespace, and Linux 4.16+ for TCP (6.3+ for UDP); without them
:meth:`LinuxEventSource.start` raises :class:`EventsUnavailableError` with the
reason, and the sampler alone serves the table.

Tracepoints used (their ``format`` files under tracefs give the layouts):

* ``sock:inet_sock_set_state`` (TCP; filtered in the kernel to the
  transitions below):

  - CLOSE -> SYN_SENT runs in the task calling ``connect()``: the owner.
    The local port is not chosen yet (0); the kernel socket address joins it
    to the next transition.
  - SYN_SENT -> ESTABLISHED (connected) or -> CLOSE (failed) carries the
    whole 4-tuple.
  - SYN_RECV -> ESTABLISHED is an inbound connection. It runs in softirq
    context, so the task then current is unrelated: a later close in process
    context names the task that held it, which owns it; until then (or when
    a reset closed it in softirq context) the owner is the listening
    socket's, resolved by the connection tracker.
  - CLOSE -> LISTEN runs in the task calling ``listen()``; LISTEN -> CLOSE
    ends a listener.
  - any -> CLOSE ends a connection; ESTABLISHED -> FIN_WAIT1 and CLOSE_WAIT
    -> LAST_ACK in process context name the task that closed it.

* ``sock:inet_sk_error_report``: why a failed attempt failed (ECONNREFUSED,
  ETIMEDOUT, EHOSTUNREACH...), matched to it by its 4-tuple within a batch.
* ``fib:fib_table_lookup`` and ``fib6:fib6_table_lookup`` filtered to UDP in
  process context: the route lookup that ``connect()`` and every unconnected
  ``sendto()`` make, in the sending task, with the destination and the local
  port. ``sock:sock_send_length`` (Linux 6.3+) filtered to UDP confirms that
  the task really sent: a ``connect()`` that sends nothing (glibc's
  ``getaddrinfo`` does that to sort addresses, RFC 6724) is not a flow.
  A UDP flow is one socket's: ``sock_send_length`` names the socket
  (``sk``), and a send from another socket or process on the same 5-tuple
  (a source port reused by the next DNS client, say) ends the flow and
  starts a new one.
* ``sched:sched_process_exec`` and perf's FORK/EXIT/COMM/NAMESPACES task
  records feed a :class:`~extension.collect.tasks.TaskTable`, so a process
  that connected and exited at once is still described.

Known limits: the tracepoints carry no network namespace, so a connection's
namespace is its task's (a socket created before ``setns(2)`` is attributed
to the new namespace until the sampler sees it); inbound connections have no
task until one closes them; records are per CPU and merged in time order
with a 2 ms margin; a burst larger than the ring loses records, which the
kernel counts (``events_lost``) and the sampler partly makes up for.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import operator
import os
import pwd
import select
import socket
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypeVar

from extension.collect.netlink_diag import (
    AddressMemo,
    NetlinkError,
    lookup_socket,
    open_diag_socket,
)
from extension.collect.normalize import normalize_address
from extension.collect.perf import (
    PERF_RECORD_COMM,
    PERF_RECORD_EXIT,
    PERF_RECORD_FORK,
    PERF_RECORD_LOST,
    PERF_RECORD_NAMESPACES,
    PERF_RECORD_SAMPLE,
    PerfError,
    PerfEvent,
    Ring,
    TracepointFormat,
    find_tracefs,
    online_cpus,
    open_dummy,
    open_tracepoint,
    read_tracepoint_format,
)
from extension.collect.tasks import Task, TaskTable
from extension.model import (
    AF_INET,
    AF_INET6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowEvent,
    ProcessInfo,
    SocketRecord,
)

__all__ = [
    "DEFAULT_RING_KIB",
    "MAX_RINGS_KIB",
    "MIN_RING_KIB",
    "EventStats",
    "EventsUnavailableError",
    "LinuxEventSource",
    "ProcessLookup",
    "default_ring_kib",
]

log = logging.getLogger(__name__)

DEFAULT_RING_KIB: Final = 4096
"""Ring size per CPU by default, KiB (see :func:`default_ring_kib`). A
loopback connection (both ends on this host, closed at once) was measured at
about 5 records of about 110 bytes: at 1,000 new connections/s, about 280
KiB/s per CPU on 2 CPUs on average, more on the CPU where the busiest
process runs. With a query pack over 30,000 rows every 2 s on a loaded host
(load average 7-9 on 2 cores) the reader thread went up to 2.8 s without
draining a ring and one ring held up to 1,330 KiB at a read; the old 512 KiB
default lost up to 5 % of the records in a 30 s round. 4 MiB holds about
three times the most seen (benchmarks/events_loss_bench.py,
docs/design/extension-performance.md)."""
MIN_RING_KIB: Final = 512
"""The smallest default ring per CPU, KiB, however many CPUs there are."""
MAX_RINGS_KIB: Final = 32768
"""Bound on the default rings' total across CPUs, KiB: each CPU's ring is
memory the kernel allocates and the extension maps (it shows in its RSS once
read through; root is exempt from ``perf_event_mlock_kb``), so many CPUs get
smaller rings, down to MIN_RING_KIB."""
_MARGIN_NS: Final = 2_000_000
"""Records younger than this when a read starts wait for the next read, so
that the CPUs' rings are merged in time order."""
_PROC_PID_INIT_INO: Final = 0xEFFFFFFC
"""The initial pid namespace's inode (include/linux/proc_ns.h)."""
_MAX_PENDING: Final = 65536
"""Cap on each correlation table (attempts, open connections, UDP flows)."""
_UDP_IDLE_NS: Final = 60 * 1_000_000_000
"""A UDP flow with no datagram for this long is forgotten (re-reported on the next)."""
_UDP_PENDING_NS: Final = 1_000_000_000
"""A UDP route lookup not followed by a send within this long is dropped."""
_SAME_CALL_NS: Final = 1_000_000
"""A route lookup and a send this close together in one thread are one sendto()."""
_DESCRIBE_TTL_SECS: Final = 60.0
_ERROR_TTL_NS: Final = 5_000_000_000

_TCP_STATE_FILTER: Final = (
    "protocol == 6 && (newstate == 2 || oldstate == 2 || newstate == 10 || newstate == 7"
    " || (oldstate == 3 && newstate == 1) || (oldstate == 1 && newstate == 4)"
    " || (oldstate == 8 && newstate == 9))"
)
_PROCESS_CONTEXT: Final = "!(common_flags & 24)"
"""TRACE_FLAG_SOFTIRQ | TRACE_FLAG_HARDIRQ (include/linux/trace_events.h) unset."""
_UDP_LOOKUP_FILTER: Final = "proto == 17 && " + _PROCESS_CONTEXT
_UDP_SEND_FILTER: Final = "protocol == 17 && " + _PROCESS_CONTEXT
_TCP_ERROR_FILTER: Final = (
    "protocol == 6 && (error == 111 || error == 110 || error == 113 || error == 101"
    " || error == 112 || error == 13 || error == 1)"
)
"""The errors a failed attempt can end with (see _FAILURES); resets (104) of
established connections, the most common report, stay in the kernel."""

_ESTABLISHED, _SYN_SENT, _SYN_RECV, _FIN_WAIT1 = 1, 2, 3, 4
_CLOSE, _CLOSE_WAIT, _LAST_ACK, _LISTEN = 7, 8, 9, 10
_STATE_NAMES: Final = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}  # fmt: skip
_FAILURES: Final = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timed_out",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EHOSTDOWN: "unreachable",
    errno.EACCES: "unreachable",
    errno.EPERM: "unreachable",
}
"""Error reported on a failed attempt -> its ``status`` (net/ipv4/icmp.c
``icmp_err_convert`` maps ICMP unreachable codes to these errnos)."""

_K = TypeVar("_K")
_SAMPLE: Final = struct.Struct("<IHHQIIQ")
"""PERF_RECORD_SAMPLE's header (type, misc, size), then identifier, pid, tid, time."""
_TASK_RECORDS: Final = frozenset(
    {PERF_RECORD_FORK, PERF_RECORD_EXIT, PERF_RECORD_COMM, PERF_RECORD_NAMESPACES}
)
_Item = tuple[int, int, int, int, int, bytes]
_Decode = Callable[[int, int, int, bytes, int], None]
_RAW_SIZE: Final = struct.Struct("<I")
_RAW_AT: Final = 44
"""Where a sample's raw tracepoint record starts: after the header (8), the
identifier (8), pid and tid (8), time (8), cpu and res (8) and the u32 size."""
_TASK_BODY: Final = struct.Struct("<IIII")
"""FORK and EXIT: pid, ppid, tid, ptid (then the record's own time)."""
_PID_TID: Final = struct.Struct("<II")
_U64: Final = struct.Struct("<Q")
_NS_ENTRY: Final = struct.Struct("<QQ")


class EventsUnavailableError(Exception):
    """Kernel events cannot be used on this host; the message says why."""


class ProcessLookup(Protocol):
    """Details of a running process (extension.enrich.process.ProcessTracker)."""

    def lookup(self, pid: int | None) -> ProcessInfo:
        """Details of ``pid`` now; every field None when unknown."""
        ...


@dataclass(frozen=True, slots=True)
class EventStats:
    """The event source's health, for ``tracked_connections_stats``.

    Attributes:
        running: True while events are read.
        reason: why events are off ('' while running).
        events_read: records read from the rings since start.
        events_lost: records the kernel dropped because a ring was full.
        flows: connections, attempts, listeners and UDP flows reported.
        evicted: correlation entries dropped by the caps (bounded memory).
        tasks: processes in the task table.
    """

    running: bool
    reason: str
    events_read: int
    events_lost: int
    flows: int
    evicted: int
    tasks: int


@dataclass(slots=True)
class _Flow:
    """A connection being followed, with what is needed to report it."""

    key: tuple[object, ...]
    pid: int | None
    snapshot: tuple[int, int, int] | None
    netns: int | None
    family: int
    protocol: int
    local: bytes
    local_port: int
    remote: bytes
    remote_port: int
    state: int
    direction: str
    status: str
    started_ns: int
    ended_ns: int | None = None
    inode: int | None = None
    looked_up: bool = False
    reported: bool = False
    last_ns: int = 0
    process: ProcessInfo | None = field(default=None)
    sk: int = 0
    """The kernel socket address that sent (UDP), 0 until a send is seen."""


def _layout(fmt: TracepointFormat, spec: list[tuple[str, str]]) -> struct.Struct:
    """A struct reading ``spec``'s fields (name, struct code) at their offsets.

    Raises:
        PerfError: a field is missing, has another size, or the fields are
            not in ascending offset order.
    """
    parts = ["<"]
    at = 0
    for name, code in spec:
        offset = fmt.offset(name, struct.calcsize("<" + code))
        if offset < at:
            raise PerfError(f"tracepoint {fmt.category}:{fmt.name} has an unexpected layout")
        if offset > at:
            parts.append(f"{offset - at}x")
        parts.append(code)
        at = offset + struct.calcsize("<" + code)
    return struct.Struct("".join(parts))


class LinuxEventSource:
    """Reads TCP and UDP connection events and process records from the kernel.

    Use: :meth:`start` (raises :class:`EventsUnavailableError`), then call
    :meth:`wait` in a loop (one thread), :meth:`stop` at the end.

    Args:
        processes: details of running processes (the sampler's
            ProcessTracker), used while the process lives.
        ring_kib: ring size per CPU, KiB (rounded up to a power of two
            pages); None for :func:`default_ring_kib` of the online CPUs.
        proc_root: procfs mount point.
        mount_tracefs: mount tracefs when it is not mounted (needs root).
    """

    def __init__(
        self,
        processes: ProcessLookup | None = None,
        *,
        ring_kib: int | None = None,
        proc_root: str = "/proc",
        mount_tracefs: bool = True,
    ) -> None:
        self._processes = processes
        self._ring_kib = ring_kib
        self.ring_kib = 0
        """Each CPU's ring as mapped, KiB (0 before :meth:`start`)."""
        self._root = proc_root
        self._mount = mount_tracefs
        self._events: list[PerfEvent] = []
        self._rings: list[Ring] = []
        self._poller: select.poll | None = None
        self._kinds: dict[int, int] = {}
        self._tasks = TaskTable(proc_root)
        self._own_netns: int | None = None
        self._diag: socket.socket | None = None
        self._sequence = 0
        self._held: list[_Item] = []
        self._connecting: OrderedDict[int, _Flow] = OrderedDict()
        self._open: OrderedDict[int, _Flow] = OrderedDict()
        self._errors: OrderedDict[tuple[int, bytes, int, bytes, int], tuple[int, int]] = (
            OrderedDict()
        )
        self._failed: list[_Flow] = []
        self._udp: OrderedDict[tuple[object, ...], _Flow] = OrderedDict()
        self._udp_pending: dict[int, tuple[int, tuple[object, ...], _Flow]] = {}
        self._udp_sockets: OrderedDict[int, tuple[object, ...]] = OrderedDict()
        self._dirty: dict[tuple[object, ...], _Flow] = {}
        self._described: OrderedDict[tuple[int, int, int], tuple[float, ProcessInfo]] = (
            OrderedDict()
        )
        self._users: dict[int, str | None] = {}
        self._addresses = AddressMemo()
        self._sources: dict[tuple[int, bytes], tuple[float, bytes]] = {}
        self._boot_offset_ns = 0
        self._wall_offset = 0.0
        self._running = False
        self.through = 0.0
        """Seconds since the Unix epoch up to which every record has been read."""
        self._reason = "not started"
        self._read = 0
        self._lost = 0
        self._flows = 0
        self._evicted = 0
        self._decoders: dict[int, _Decode] = {}

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Check the host, open the tracepoints on every CPU and start recording.

        Raises:
            EventsUnavailableError: with a sentence saying why (not Linux, a pid
                namespace other than the host's, no privilege, no tracefs, a
                missing tracepoint, a ring that cannot be mapped).
        """
        try:
            self._start()
        except EventsUnavailableError as err:
            self._reason = str(err)
            self.stop()
            raise
        except PerfError as err:
            self._reason = _explain(err)
            self.stop()
            raise EventsUnavailableError(self._reason) from err
        self._running = True
        self._reason = ""

    def _start(self) -> None:
        if not sys.platform.startswith("linux"):
            raise EventsUnavailableError(f"kernel events are Linux-only (this is {sys.platform})")
        try:
            pid_ns = os.stat(f"{self._root}/self/ns/pid").st_ino
            self._own_netns = os.stat(f"{self._root}/self/ns/net").st_ino
        except OSError as err:
            raise EventsUnavailableError(f"cannot read {self._root}/self/ns: {err}") from err
        if pid_ns != _PROC_PID_INIT_INO:
            raise EventsUnavailableError(
                "the extension runs in a pid namespace other than the host's (a container"
                " without --pid=host): the kernel would report other processes' pids as 0"
            )
        tracefs = find_tracefs(mount=self._mount)
        state = read_tracepoint_format(tracefs, "sock", "inet_sock_set_state")
        execs = read_tracepoint_format(tracefs, "sched", "sched_process_exec")
        plan: list[tuple[TracepointFormat, str | None, _Decode]]
        plan = [
            (state, _TCP_STATE_FILTER, self._decoder_state(state)),
            (execs, None, self._decoder_exec(execs)),
        ]
        optional = [
            ("sock", "inet_sk_error_report", _TCP_ERROR_FILTER, self._decoder_error),
            ("fib", "fib_table_lookup", _UDP_LOOKUP_FILTER, self._decoder_fib4),
            ("fib6", "fib6_table_lookup", _UDP_LOOKUP_FILTER, self._decoder_fib6),
            ("sock", "sock_send_length", _UDP_SEND_FILTER, self._decoder_send),
        ]
        found: dict[str, TracepointFormat] = {}
        for category, name, condition, make in optional:
            try:
                fmt = read_tracepoint_format(tracefs, category, name)
                plan.append((fmt, condition, make(fmt)))
                found[name] = fmt
            except PerfError as err:
                log.info("kernel events: %s; continuing without it", err)
        if "sock_send_length" not in found:
            # Without proof of a send, a UDP route lookup is not a flow.
            plan = [p for p in plan if p[0].category not in ("fib", "fib6")]
            log.warning(
                "kernel events: no sock:sock_send_length tracepoint (Linux 6.3+): UDP flows"
                " are seen by sampling only"
            )
        cpus = online_cpus()
        ring_kib = self._ring_kib or default_ring_kib(len(cpus))
        self.ring_kib = _ring_pages(ring_kib) * os.sysconf("SC_PAGE_SIZE") // 1024
        pages = _ring_pages(ring_kib)
        watermark = max(pages * os.sysconf("SC_PAGE_SIZE") // 4, 4096)
        poller = select.poll()
        for cpu in cpus:
            lead = open_dummy(cpu, watermark)
            self._events.append(lead)
            self._kinds[lead.id] = 0
            ring = Ring(lead, pages)
            self._rings.append(ring)
            poller.register(lead.fd, select.POLLIN)
            for fmt, expression, decode in plan:
                event = open_tracepoint(fmt, cpu)
                self._events.append(event)
                if expression:
                    event.set_filter(expression)
                event.redirect_to(lead)
                self._decoders[event.id] = decode
        self._poller = poller
        self._tasks.seed()
        with contextlib.suppress(OSError):
            self._diag = open_diag_socket()
            self._diag.settimeout(1.0)
        self._sync_clocks()
        for event in self._events:
            event.enable()

    def stop(self) -> None:
        """Stop reading and release every descriptor (idempotent)."""
        self._running = False
        if not self._reason:
            self._reason = "stopped"
        for ring in self._rings:
            ring.close()
        for event in self._events:
            with contextlib.suppress(OSError):
                event.close()
        self._rings.clear()
        self._events.clear()
        self._poller = None
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def stats(self) -> EventStats:
        """A snapshot of the counters (read from another thread: values may be a read apart)."""
        return EventStats(
            running=self._running,
            reason=self._reason,
            events_read=self._read,
            events_lost=self._lost,
            flows=self._flows,
            evicted=self._evicted,
            tasks=len(self._tasks),
        )

    # ---------------------------------------------------------------- reading

    def wait(self, timeout_secs: float) -> list[FlowEvent]:
        """Wait up to ``timeout_secs`` for records, read them, report what changed.

        Returns:
            FlowEvents for flows that are new or changed since the last call,
            in the order they began.
        """
        if self._poller is None:
            return []
        with contextlib.suppress(InterruptedError):
            self._poller.poll(max(0, int(timeout_secs * 1000)))
        return self.read()

    def read(self) -> list[FlowEvent]:
        """Read what the rings hold now, without waiting (see :meth:`wait`)."""
        if not self._rings:
            return []
        self._sync_clocks()
        cutoff = time.monotonic_ns() - _MARGIN_NS
        self.through = cutoff / 1e9 + self._wall_offset
        batch = self._held
        for ring in self._rings:
            self._split(ring.read(), batch)
        batch.sort(key=_by_time)
        ready = len(batch)
        while ready and batch[ready - 1][0] > cutoff:
            ready -= 1
        self._held = batch[ready:]
        decoders = self._decoders
        for at, ident, pid, tid, offset, data in batch[:ready]:
            if ident:
                decode = decoders.get(ident)
                if decode is not None:
                    decode(at, pid, tid, data, offset + _RAW_AT)
            else:
                self._task_record(pid, at, data, offset, tid)
        self._read += ready
        return self._finish(cutoff)

    def _split(self, data: bytes, out: list[_Item]) -> None:
        """Index a ring's records: (time ns, identifier, pid, tid, offset, bytes).

        A sample has its event's identifier; a task record has identifier 0,
        its record type in place of the pid and its size in place of the tid.
        """
        offset, end = 0, len(data)
        unpack_header = _HEADER.unpack_from
        unpack_sample = _SAMPLE.unpack_from
        unpack_u64 = _U64.unpack_from
        append = out.append
        whole = _SAMPLE.size
        while offset + 8 <= end:
            if offset + whole <= end:
                kind, _, size, ident, pid, tid, at = unpack_sample(data, offset)
            else:
                kind, _, size = unpack_header(data, offset)
            if size < 8 or offset + size > end:
                break
            if kind == PERF_RECORD_SAMPLE:
                append((at, ident, pid, tid, offset, data))
            elif kind == PERF_RECORD_LOST:
                self._lost += unpack_u64(data, offset + 16)[0]
            elif kind in _TASK_RECORDS:
                append((unpack_u64(data, offset + size - 24)[0], 0, kind, size, offset, data))
            offset += size

    # ---------------------------------------------------------- task records

    def _task_record(self, kind: int, at: int, data: bytes, offset: int, size: int) -> None:
        tasks = self._tasks
        if kind == PERF_RECORD_FORK:
            pid, ppid, tid, _ = _TASK_BODY.unpack_from(data, offset + 8)
            if pid != ppid or pid == tid:
                tasks.fork(pid, ppid, tid, self._ticks(at))
        elif kind == PERF_RECORD_EXIT:
            pid, _, tid, _ = _TASK_BODY.unpack_from(data, offset + 8)
            tasks.exit(pid, tid)
        elif kind == PERF_RECORD_COMM:
            pid, tid = _PID_TID.unpack_from(data, offset + 8)
            name = data[offset + 16 : offset + size - 32].split(b"\0", 1)[0]
            tasks.comm(pid, tid, name.decode("utf-8", "replace"))
        elif kind == PERF_RECORD_NAMESPACES:
            pid, tid = _PID_TID.unpack_from(data, offset + 8)
            count = _U64.unpack_from(data, offset + 16)[0]
            if count:
                tasks.namespaces(pid, tid, _NS_ENTRY.unpack_from(data, offset + 24)[1])

    def _decoder_exec(self, fmt: TracepointFormat) -> _Decode:
        location = fmt.offset("filename", 4)
        tasks = self._tasks

        def decode(at: int, pid: int, tid: int, data: bytes, base: int) -> None:
            loc = _RAW_SIZE.unpack_from(data, base + location)[0]
            start = base + (loc & 0xFFFF)
            name = data[start : start + (loc >> 16)].split(b"\0", 1)[0]
            tasks.exec(pid, os.fsdecode(name))

        return decode

    # ------------------------------------------------------------------ TCP

    def _decoder_state(self, fmt: TracepointFormat) -> _Decode:
        layout = _layout(fmt, [
            ("common_flags", "B"), ("skaddr", "Q"), ("oldstate", "i"), ("newstate", "i"),
            ("sport", "H"), ("dport", "H"), ("family", "H"), ("protocol", "H"),
            ("saddr", "4s"), ("daddr", "4s"), ("saddr_v6", "16s"), ("daddr_v6", "16s"),
        ])  # fmt: skip
        unpack = layout.unpack_from
        on_state = self._on_state

        def decode(at: int, pid: int, tid: int, data: bytes, base: int) -> None:
            on_state(at, pid, unpack(data, base), tid)

        return decode

    def _on_state(self, at: int, pid: int, fields: tuple[Any, ...], tid: int) -> None:
        """One inet_sock_set_state record (``fields`` as the decoder's layout reads them)."""
        flags, sk, old, new, sport, dport, family, _, saddr, daddr, saddr6, daddr6 = fields
        if family == socket.AF_INET6:
            saddr, daddr = saddr6, daddr6
        irq = bool(flags & 0x18)
        if new == _SYN_SENT and old == _CLOSE:
            attempt = self._new_tcp(("tcp", sk, at), pid, tid, family, at=at,
                                    ends=(saddr, sport, daddr, dport, _SYN_SENT))  # fmt: skip
            self._put(self._connecting, sk, attempt)
        elif old == _SYN_SENT:
            self._attempt_ended(sk, at, new, saddr, sport)
        elif new == _ESTABLISHED and old == _SYN_RECV:
            inbound = self._new_tcp(("tcp", sk, at), None, tid, family, at=at,
                                    ends=(saddr, sport, daddr, dport, _ESTABLISHED))  # fmt: skip
            self._put(self._open, sk, inbound)
            self._touch(inbound)
        elif new == _LISTEN:
            listener = self._new_tcp(("listen", sk, at), pid, tid, family, at=at,
                                     ends=(saddr, sport, b"", 0, _LISTEN))  # fmt: skip
            self._put(self._open, sk, listener)
            self._touch(listener)
        elif new == _CLOSE:
            self._closed(sk, at, None if irq else (pid, tid))
        elif not irq:
            self._closing(sk, new, (pid, tid))

    def _new_tcp(
        self,
        key: tuple[object, ...],
        pid: int | None,
        tid: int,
        family: int,
        *,
        at: int,
        ends: tuple[bytes, int, bytes, int, int],
    ) -> _Flow:
        """A TCP flow: outbound when ``pid`` is known, inbound (owner unknown) when not.

        ``ends`` is (local address, local port, remote address, remote port, state).
        """
        local, local_port, remote, remote_port, state = ends
        if state == _LISTEN:
            direction, status = "listening", ""
        elif pid is None:
            direction, status = "inbound", "connected"
        else:
            direction, status = "outbound", ""
        snapshot, netns = self._who(pid, tid)
        return _Flow(
            key, pid, snapshot, netns, family, IPPROTO_TCP, local, local_port, remote,
            remote_port, state, direction, status, at,
        )  # fmt: skip

    def _who(self, pid: int | None, tid: int) -> tuple[tuple[int, int, int] | None, int | None]:
        """(snapshot, network namespace) of the task ``pid``/``tid`` now."""
        if pid is None:
            return None, None
        task = self._tasks.running(pid)
        if task is None:
            return None, None
        return (pid, task.start_ticks, task.execs), task.thread_netns.get(tid, task.netns)

    def _attempt_ended(self, sk: int, at: int, new: int, local: bytes, local_port: int) -> None:
        """SYN_SENT -> ESTABLISHED or CLOSE: the attempt's outcome and whole 4-tuple."""
        flow = self._connecting.pop(sk, None)
        if flow is None:
            return  # began before we started, or its record was lost
        flow.local, flow.local_port, flow.state = local, local_port, new
        if new == _ESTABLISHED:
            flow.status = "connected"
            self._put(self._open, sk, flow)
        else:
            flow.ended_ns = at
            self._failed.append(flow)  # the reason may follow: settled in _finish
        if flow.local_port:
            self._touch(flow)

    def _closed(self, sk: int, at: int, task: tuple[int, int] | None) -> None:
        """Any state -> CLOSE: the connection or listener ended.

        ``task`` is (pid, tid) when it ran in process context, else None.
        """
        flow = self._open.pop(sk, None)
        if flow is None:
            return
        flow.state, flow.ended_ns = _CLOSE, at
        if task is not None:
            self._holder(flow, *task)
        self._touch(flow)

    def _closing(self, sk: int, new: int, task: tuple[int, int]) -> None:
        """A close() in process context (-> FIN_WAIT1, -> LAST_ACK)."""
        flow = self._open.get(sk)
        if flow is None:
            return
        flow.state = new
        if self._holder(flow, *task):
            self._touch(flow)

    def _holder(self, flow: _Flow, pid: int, tid: int) -> bool:
        """An inbound connection closed by a task: that task held it, so it owns it.

        Returns:
            True when the flow learned its owner now.
        """
        if flow.direction != "inbound" or flow.pid is not None:
            return False
        flow.pid, (flow.snapshot, netns) = pid, self._who(pid, tid)
        if flow.netns is None:
            flow.netns = netns
        return True

    def _decoder_error(self, fmt: TracepointFormat) -> _Decode:
        layout = _layout(fmt, [
            ("error", "i"), ("sport", "H"), ("dport", "H"), ("family", "H"), ("protocol", "H"),
            ("saddr", "4s"), ("daddr", "4s"), ("saddr_v6", "16s"), ("daddr_v6", "16s"),
        ])  # fmt: skip
        unpack = layout.unpack_from
        errors = self._errors

        def decode(at: int, pid: int, tid: int, data: bytes, base: int) -> None:
            error, sport, dport, family, _, saddr, daddr, saddr6, daddr6 = unpack(data, base)
            if family == socket.AF_INET6:
                saddr, daddr = saddr6, daddr6
            key = (family, saddr, sport, daddr, dport)
            errors[key] = (error, at)
            errors.move_to_end(key)
            if len(errors) > _MAX_PENDING:
                errors.popitem(last=False)

        return decode

    # ------------------------------------------------------------------ UDP

    def _decoder_fib4(self, fmt: TracepointFormat) -> _Decode:
        layout = _layout(fmt, [("src", "4s"), ("dst", "4s")])
        ports = _layout(fmt, [("sport", "H"), ("dport", "H")])
        return self._decoder_fib(AF_INET, layout, ports)

    def _decoder_fib6(self, fmt: TracepointFormat) -> _Decode:
        layout = _layout(fmt, [("src", "16s"), ("dst", "16s")])
        ports = _layout(fmt, [("sport", "H"), ("dport", "H")])
        return self._decoder_fib(AF_INET6, layout, ports)

    def _decoder_fib(self, family: int, addresses: struct.Struct, ports: struct.Struct) -> _Decode:
        unpack_addresses, unpack_ports = addresses.unpack_from, ports.unpack_from
        pending = self._udp_pending

        def decode(at: int, pid: int, tid: int, data: bytes, base: int) -> None:
            src, dst = unpack_addresses(data, base)
            sport, dport = unpack_ports(data, base)
            if not sport or not dport:
                return
            netns = self._tasks.netns(pid, tid)
            key: tuple[object, ...] = ("udp", netns, family, sport, dst, dport)
            flow = self._udp.get(key)
            if flow is None:
                # The flow's own key names this flow; a datagram to the same
                # place after it was forgotten (_UDP_IDLE_NS) is a new flow.
                flow = _Flow(
                    key=(*key, at), pid=pid, snapshot=None, netns=netns, family=family,
                    protocol=IPPROTO_UDP, local=src, local_port=sport, remote=dst,
                    remote_port=dport, state=0, direction="outbound", status="",
                    started_ns=at,
                )  # fmt: skip
            elif not any(flow.local) and any(src):
                flow.local = src
                if key in self._udp:
                    self._touch(flow)
            pending[tid] = (at, key, flow)

        return decode

    def _decoder_send(self, fmt: TracepointFormat) -> _Decode:
        layout = _layout(fmt, [("sk", "Q"), ("ret", "i")])
        unpack = layout.unpack_from
        pending = self._udp_pending
        sockets = self._udp_sockets

        def decode(at: int, pid: int, tid: int, data: bytes, base: int) -> None:
            sk, sent = unpack(data, base)
            known = sockets.get(sk)
            waiting = pending.get(tid)
            if known is not None:
                flow = self._udp.get(known)
                if flow is not None:
                    flow.last_ns = at
                # A known socket's send confirms a route lookup only when both
                # belong to one sendto(); a lookup left by a connect() that
                # sent nothing (getaddrinfo) stays unconfirmed.
                if waiting is None or at - waiting[0] > _SAME_CALL_NS:
                    return
            if waiting is None:
                return
            del pending[tid]
            if sent < 0 or at - waiting[0] > _UDP_PENDING_NS:
                return
            _, key, flow = waiting
            if self._udp.get(key) is flow and (
                flow.sk != sk or flow.pid != pid or flow.ended_ns is not None
            ):
                # Another socket on this 5-tuple (another process reusing the
                # source port, or a new socket at a freed one's address): the
                # old socket is gone, so its flow ends and this is a new one.
                del self._udp[key]
                if flow.ended_ns is None:
                    flow.ended_ns = at
                    self._touch(flow)
                flow = replace(flow, key=(*key, at), ended_ns=None, inode=None,
                               looked_up=False, reported=False, process=None)  # fmt: skip
            flow.last_ns = at
            if key not in self._udp:
                flow.pid, flow.snapshot, flow.started_ns = pid, self._who(pid, tid)[0], at
                flow.sk = sk
                self._put(self._udp, key, flow)
                self._touch(flow)
            sockets[sk] = key
            sockets.move_to_end(sk)
            if len(sockets) > _MAX_PENDING:
                sockets.popitem(last=False)

        return decode

    # ------------------------------------------------------------- reporting

    def _finish(self, cutoff: int) -> list[FlowEvent]:
        """Settle this read's failures and lookups, and report what changed."""
        for flow in self._failed:
            error = self._errors.pop(
                (flow.family, flow.local, flow.local_port, flow.remote, flow.remote_port), None
            )
            flow.status = _FAILURES.get(error[0], "timed_out") if error else "timed_out"
            if flow.local_port:
                self._touch(flow)
        self._failed.clear()
        self._expire(cutoff)
        if not self._dirty:
            return []
        wall = self._wall_offset
        out: list[FlowEvent] = []
        for flow in sorted(self._dirty.values(), key=lambda f: f.started_ns):
            if not flow.looked_up and flow.ended_ns is None:
                self._look_up(flow, cutoff)
            if flow.process is None and flow.pid is not None:
                flow.process = self._describe(flow.pid, flow.snapshot)
            out.append(self._event(flow, wall))
        self._dirty.clear()
        return out

    def _event(self, flow: _Flow, wall: float) -> FlowEvent:
        text = self._addresses.get
        family, local = text(flow.local)
        remote = text(flow.remote)[1] if flow.remote_port else ""
        if flow.protocol == IPPROTO_UDP and local in ("0.0.0.0", "::"):
            local = self._source_address(flow, family) or local
        record = SocketRecord(
            flow.pid,
            family,
            flow.protocol,
            local,
            flow.local_port,
            remote,
            flow.remote_port,
            _STATE_NAMES.get(flow.state, "") if flow.protocol == IPPROTO_TCP else "",
            flow.inode,
            flow.netns,
        )
        return FlowEvent(
            key=flow.key,
            record=record,
            process=flow.process,
            direction=flow.direction,
            status=flow.status,
            started=flow.started_ns / 1e9 + wall,
            ended=flow.ended_ns / 1e9 + wall if flow.ended_ns is not None else None,
        )

    def _look_up(self, flow: _Flow, now_ns: int) -> None:
        """Find an open flow's socket in our own namespace (one sock_diag request).

        Found: the flow gets its inode. Not found: a connected UDP flow has
        ended (the kernel reports no UDP close, so this is how its end is
        known at once); a TCP connection is left to its close event.
        """
        flow.looked_up = True
        if self._diag is None or flow.netns not in (None, self._own_netns):
            return
        if flow.direction == "listening" or not any(flow.local):
            return
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF
        try:
            found = lookup_socket(
                self._diag,
                flow.family,
                flow.protocol,
                (flow.local, flow.local_port),
                (flow.remote, flow.remote_port),
                sequence=self._sequence,
            )
        except NetlinkError as err:
            log.debug("sock_diag lookup failed: %s", err)
            return
        if found is not None and found.connected:
            flow.inode = found.inode
            flow.netns = self._own_netns
        elif found is None and flow.protocol == IPPROTO_UDP:
            flow.ended_ns = now_ns

    def _source_address(self, flow: _Flow, family: int) -> str | None:
        """The local address the kernel picks for an unbound UDP send (our namespace).

        Asks the kernel the same question: a UDP socket ``connect()``ed to the
        destination (no datagram is sent) reports the source address route
        selection chose (ip(7), ipv6(7)).
        """
        if flow.netns not in (None, self._own_netns):
            return None
        now = time.monotonic()
        cache_key = (flow.family, flow.remote)
        cached = self._sources.get(cache_key)
        if cached is not None and now - cached[0] < 10.0:
            return _text(family, cached[1])[1]
        try:
            with socket.socket(flow.family, socket.SOCK_DGRAM) as probe:
                probe.connect((socket.inet_ntop(flow.family, flow.remote), flow.remote_port))
                local = socket.inet_pton(flow.family, probe.getsockname()[0].split("%", 1)[0])
        except OSError:
            return None
        if len(self._sources) > 4096:
            self._sources.clear()
        self._sources[cache_key] = (now, local)
        return _text(family, local)[1]

    # --------------------------------------------------------------- owners

    def _describe(self, pid: int, snapshot: tuple[int, int, int] | None) -> ProcessInfo:
        """Owner details for the process image in ``snapshot``."""
        now = time.monotonic()
        if snapshot is not None:
            cached = self._described.get(snapshot)
            if cached is not None and now - cached[0] < _DESCRIBE_TTL_SECS:
                return cached[1]
        task = self._tasks.get(pid)
        same = (
            task is not None
            and snapshot is not None
            and (task.start_ticks == snapshot[1] and task.execs == snapshot[2])
        )
        info: ProcessInfo | None = None
        if same and task is not None and task.exited is None and self._processes is not None:
            live = self._processes.lookup(pid)
            start = task.start_time(self._tasks.boot)
            if (
                live.name is not None
                and live.start_time is not None
                and (abs(live.start_time - start) <= 1)
            ):
                info = live
                task.cmdline, task.uid = live.cmdline, live.uid
        if info is None:
            info = self._derive(task if same else None, pid)
        if snapshot is not None:
            self._described[snapshot] = (now, info)
            if len(self._described) > 4096:
                self._described.popitem(last=False)
        return info

    def _derive(self, task: Task | None, pid: int) -> ProcessInfo:
        """Owner details from the task table alone (the process is gone)."""
        if task is None:
            return ProcessInfo()
        parent = self._tasks.get(task.ppid) if task.ppid else None
        uid, cmdline = task.uid, task.cmdline
        if parent is not None and (uid is None or (cmdline is None and task.execs == 0)):
            inherited = self._describe(parent.pid, (parent.pid, parent.start_ticks, parent.execs))
            uid = uid if uid is not None else inherited.uid
            if cmdline is None and task.execs == 0:
                cmdline = inherited.cmdline
        return ProcessInfo(
            name=task.full_name() or None,
            path=_real_path(task.exe),
            cmdline=cmdline,
            uid=uid,
            username=self._username(uid),
            parent=task.ppid,
            parent_name=parent.full_name() if parent is not None else None,
            parent_path=_real_path(parent.exe) if parent is not None else None,
            start_time=task.start_time(self._tasks.boot),
        )

    def _username(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        if uid not in self._users:
            try:
                self._users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._users[uid] = None
        return self._users[uid]

    # ------------------------------------------------------------ bookkeeping

    def _touch(self, flow: _Flow) -> None:
        if not flow.reported:
            flow.reported = True
            self._flows += 1
        self._dirty[flow.key] = flow

    def _put(self, table: OrderedDict[_K, _Flow], key: _K, flow: _Flow) -> None:
        table[key] = flow
        if len(table) > _MAX_PENDING:
            table.popitem(last=False)
            self._evicted += 1

    def _expire(self, now_ns: int) -> None:
        limit = now_ns - _UDP_IDLE_NS
        while self._udp:
            key, flow = next(iter(self._udp.items()))
            if max(flow.last_ns, flow.started_ns) >= limit:
                break
            del self._udp[key]
        stale = [tid for tid, (at, _, _) in self._udp_pending.items()
                 if at < now_ns - _UDP_PENDING_NS]  # fmt: skip
        for tid in stale:
            del self._udp_pending[tid]
        error_limit = now_ns - _ERROR_TTL_NS
        while self._errors:
            _, (_, at) = next(iter(self._errors.items()))
            if at >= error_limit:
                break
            self._errors.popitem(last=False)

    def _sync_clocks(self) -> None:
        # The wall clock's offset from the monotonic clock, from the closest of
        # three pairs of readings: a thread switch between two readings would
        # put every event of this read that much late (and DNS answers, read
        # on the wall clock, before connections they came after).
        best_gap, offset_ns = -1, 0
        for _ in range(3):
            before = time.monotonic_ns()
            wall = time.time_ns()
            after = time.monotonic_ns()
            if best_gap < 0 or after - before < best_gap:
                best_gap, offset_ns = after - before, wall - (before + after) // 2
        mono = time.monotonic_ns()
        self._wall_offset = offset_ns / 1e9
        boottime = getattr(time, "CLOCK_BOOTTIME", None)
        boot = time.clock_gettime_ns(boottime) if boottime is not None else mono
        self._boot_offset_ns = boot - mono

    def _ticks(self, monotonic_ns: int) -> int:
        """Clock ticks since boot of a record's time, as /proc/<pid>/stat counts them."""
        return (monotonic_ns + self._boot_offset_ns) * _CLK_TCK // 1_000_000_000


_HEADER: Final = struct.Struct("<IHH")
_CLK_TCK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


_by_time: Final = operator.itemgetter(0)


def _text(family: int, raw: bytes) -> tuple[int, str]:
    """(family, text) of a raw address, IPv4-mapped IPv6 unmapped."""
    if family == socket.AF_INET:
        return AF_INET, socket.inet_ntop(socket.AF_INET, raw[:4])
    return normalize_address(AF_INET6, socket.inet_ntop(socket.AF_INET6, raw[:16]))


def _real_path(path: str | None) -> str | None:
    """The executable's path with symbolic links resolved, as /proc/<pid>/exe shows it.

    The exec tracepoint gives the path passed to execve(2), which may be a
    link (a virtualenv's ``bin/python``, say); the kernel's ``exe`` link, and
    psutil's ``Process.exe()``, name the file it leads to.
    """
    if path is None:
        return None
    try:
        return os.path.realpath(path, strict=True)
    except OSError:
        return path


def default_ring_kib(cpus: int) -> int:
    """The default ring per CPU for ``cpus`` CPUs, KiB: a power of two.

    DEFAULT_RING_KIB while ``cpus`` such rings fit in MAX_RINGS_KIB, else
    the largest power of two that fits, but never below MIN_RING_KIB (so
    beyond 64 CPUs the total grows past MAX_RINGS_KIB, 512 KiB each).
    """
    share = MAX_RINGS_KIB // max(cpus, 1)
    if share >= DEFAULT_RING_KIB:
        return DEFAULT_RING_KIB
    return max(MIN_RING_KIB, 1 << (share.bit_length() - 1) if share else 0)


def _ring_pages(kib: int) -> int:
    pages = max(1, kib * 1024 // os.sysconf("SC_PAGE_SIZE"))
    return 1 << (pages - 1).bit_length()


def _explain(err: PerfError) -> str:
    """A sentence for the stats table from a perf failure."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{err}: kernel events need root with CAP_PERFMON or CAP_SYS_ADMIN"
            " (osqueryd runs extensions as root)"
        )
    if err.errno == errno.ENOENT:
        return f"{err}: this kernel lacks the tracepoint (Linux 4.16 or newer is needed)"
    if err.errno in (errno.ENOMEM, errno.EAGAIN):
        return f"{err}: the ring could not be mapped (locked-memory limit; try a smaller ring)"
    return str(err)
