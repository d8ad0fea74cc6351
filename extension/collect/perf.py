"""perf_event_open(2) through ctypes: tracepoints and task records into mmap rings.

The kernel event source (linux_events.py) needs three things from perf, all
available to root (or CAP_PERFMON) since Linux 4.16 without BPF or a
compiler:

* **Tracepoints** (``PERF_TYPE_TRACEPOINT``), one event per CPU, each with
  an optional in-kernel filter (``PERF_EVENT_IOC_SET_FILTER``, the ftrace
  filter language) and ``PERF_SAMPLE_RAW``, which copies the tracepoint's
  record (its ``format`` file under tracefs gives the field offsets).
* **Task records** from a software ``dummy`` event with ``comm``, ``task``,
  ``comm_exec`` and ``namespaces`` set: ``PERF_RECORD_COMM``, ``FORK``,
  ``EXIT`` and ``NAMESPACES`` for every task on the host.
* **One ring per CPU**: every event of a CPU is redirected into the dummy
  event's ring (``PERF_EVENT_IOC_SET_OUTPUT``); lost records are reported in
  the ring as ``PERF_RECORD_LOST`` with the kernel's own count.

Layouts and numbers come from Linux ``include/uapi/linux/perf_event.h``
(``struct perf_event_attr`` up to ``PERF_ATTR_SIZE_VER5``, 112 bytes; the
record types; ``struct perf_event_mmap_page``, whose ``data_head`` and
``data_tail`` sit at byte offsets 1024 and 1032), perf_event_open(2), and
the tracefs documentation (Documentation/trace/events.rst: the ``format``
and ``id`` files, the filter syntax). System call numbers are from each
architecture's syscall table.

Every function raises :class:`PerfError` with the errno and a sentence a
user can act on; nothing here logs.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import re
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PERF_RECORD_COMM",
    "PERF_RECORD_EXIT",
    "PERF_RECORD_FORK",
    "PERF_RECORD_LOST",
    "PERF_RECORD_NAMESPACES",
    "PERF_RECORD_SAMPLE",
    "TRACEFS_MOUNTS",
    "PerfError",
    "PerfEvent",
    "Ring",
    "TracepointFormat",
    "find_tracefs",
    "online_cpus",
    "open_dummy",
    "open_tracepoint",
    "read_tracepoint_format",
]

PERF_TYPE_SOFTWARE: Final = 1
PERF_TYPE_TRACEPOINT: Final = 2
PERF_COUNT_SW_DUMMY: Final = 9

PERF_SAMPLE_TID: Final = 1 << 1
PERF_SAMPLE_TIME: Final = 1 << 2
PERF_SAMPLE_CPU: Final = 1 << 7
PERF_SAMPLE_RAW: Final = 1 << 10
PERF_SAMPLE_IDENTIFIER: Final = 1 << 16

# Bits of the attr flags word (the bitfield after read_format).
_DISABLED: Final = 1 << 0
_COMM: Final = 1 << 9
_TASK: Final = 1 << 13
_WATERMARK: Final = 1 << 14
_SAMPLE_ID_ALL: Final = 1 << 18
_COMM_EXEC: Final = 1 << 24
_USE_CLOCKID: Final = 1 << 25
_NAMESPACES: Final = 1 << 28

PERF_RECORD_LOST: Final = 2
PERF_RECORD_COMM: Final = 3
PERF_RECORD_EXIT: Final = 4
PERF_RECORD_FORK: Final = 7
PERF_RECORD_SAMPLE: Final = 9
PERF_RECORD_NAMESPACES: Final = 16

PERF_RECORD_MISC_COMM_EXEC: Final = 1 << 13

# ioctl numbers: _IO('$', n) = 0x2400 | n; _IOW('$', 6, char *) and
# _IOR('$', 7, u64) carry the 8-byte argument size.
_IOC_ENABLE: Final = 0x2400
_IOC_SET_OUTPUT: Final = 0x2405
_IOC_SET_FILTER: Final = 0x40082406
_IOC_ID: Final = 0x80082407

_PERF_FLAG_FD_CLOEXEC: Final = 1 << 3
_CLOCK_MONOTONIC: Final = 1

# struct perf_event_attr, PERF_ATTR_SIZE_VER5: type, size, config,
# sample_period, sample_type, read_format, flags, wakeup_watermark, bp_type,
# config1, config2, branch_sample_type, sample_regs_user, sample_stack_user,
# clockid, sample_regs_intr, aux_watermark, sample_max_stack, reserved.
_ATTR: Final = struct.Struct("<IIQQQQQIIQQQQIiQIHH")

SAMPLE_TYPE: Final = PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_CPU
"""Sample fields of every event here; tracepoints add PERF_SAMPLE_RAW.

With ``sample_id_all`` the same fields trail every non-sample record, in
the order TID (pid, tid), TIME, CPU (cpu, res), IDENTIFIER: 32 bytes."""

TRACEFS_MOUNTS: Final = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
"""Where tracefs is found: its own mount point (Linux 4.1+) or under debugfs."""

# perf_event_open's number on each architecture (arch/*/entry/syscalls,
# include/uapi/asm-generic/unistd.h for the generic table).
_SYSCALL_NUMBERS: Final = {
    "x86_64": 298,
    "amd64": 298,
    "i386": 336,
    "i686": 336,
    "aarch64": 241,
    "arm64": 241,
    "riscv64": 241,
    "armv7l": 364,
    "ppc64le": 319,
    "ppc64": 319,
    "s390x": 331,
}

_FIELD = re.compile(r"field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
                    r"(?:\s*signed:(?P<signed>\d+);)?")


class PerfError(Exception):
    """A perf or tracefs operation failed.

    Attributes:
        errno: the OS error number, or 0 when none applies.
    """

    def __init__(self, message: str, error_number: int | None = 0) -> None:
        super().__init__(message)
        self.errno = error_number or 0


@dataclass(frozen=True, slots=True)
class TracepointFormat:
    """A tracepoint's id and field layout, from tracefs.

    Attributes:
        category: e.g. ``'sock'``.
        name: e.g. ``'inet_sock_set_state'``.
        id: the number perf takes as ``config``.
        fields: field name -> (byte offset, size) within the raw record,
            common fields (``common_type``, ``common_flags``, ...) included.
    """

    category: str
    name: str
    id: int
    fields: dict[str, tuple[int, int]]

    def offset(self, field: str, size: int | None = None) -> int:
        """Byte offset of ``field``, checking its size when given.

        Raises:
            PerfError: the kernel's tracepoint has no such field, or another size.
        """
        try:
            offset, actual = self.fields[field]
        except KeyError:
            raise PerfError(
                f"tracepoint {self.category}:{self.name} has no field {field!r}"
            ) from None
        if size is not None and actual != size:
            raise PerfError(
                f"tracepoint {self.category}:{self.name} field {field!r} is {actual} bytes,"
                f" expected {size}"
            )
        return offset


def find_tracefs(mount: bool = True) -> str:
    """The tracefs directory, mounting it at /sys/kernel/tracing when absent.

    Args:
        mount: try ``mount -t tracefs nodev /sys/kernel/tracing`` (mount(2))
            when no tracefs is found; needs CAP_SYS_ADMIN.

    Raises:
        PerfError: no tracefs, and it could not be mounted.
    """
    for path in TRACEFS_MOUNTS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    if not mount:
        raise PerfError("tracefs is not mounted (looked in " + ", ".join(TRACEFS_MOUNTS) + ")")
    target = TRACEFS_MOUNTS[0]
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"nodev", target.encode(), b"tracefs", ctypes.c_ulong(0), None)
    if rc != 0:
        err = ctypes.get_errno()
        raise PerfError(
            f"tracefs is not mounted and mounting it at {target} failed: {os.strerror(err)}"
            " (mount it with `mount -t tracefs nodev /sys/kernel/tracing`)",
            err,
        )
    if not os.path.isdir(os.path.join(target, "events")):
        raise PerfError(f"tracefs mounted at {target} has no events directory")
    return target


def read_tracepoint_format(tracefs: str, category: str, name: str) -> TracepointFormat:
    """Read ``events/<category>/<name>/{id,format}`` under tracefs.

    Raises:
        PerfError: the tracepoint does not exist on this kernel or is unreadable.
    """
    base = os.path.join(tracefs, "events", category, name)
    try:
        with open(os.path.join(base, "id"), encoding="ascii") as f:
            tp_id = int(f.read())
        with open(os.path.join(base, "format"), encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        raise PerfError(f"this kernel has no tracepoint {category}:{name}", errno.ENOENT) from None
    except (OSError, ValueError) as err:
        code = err.errno if isinstance(err, OSError) and err.errno else 0
        raise PerfError(f"cannot read tracepoint {category}:{name}: {err}", code) from err
    fields: dict[str, tuple[int, int]] = {}
    for match in _FIELD.finditer(text):
        declaration = match.group("decl").split()
        if not declaration:
            continue
        field = declaration[-1].split("[", 1)[0]
        fields[field] = (int(match.group("offset")), int(match.group("size")))
    return TracepointFormat(category, name, tp_id, fields)


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """The online CPU numbers, from a list such as ``0-3,6``.

    Raises:
        PerfError: the file is missing or not a CPU list.
    """
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        cpus: list[int] = []
        for part in text.split(","):
            first, _, last = part.partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    except (OSError, ValueError) as err:
        raise PerfError(f"cannot read the online CPUs from {path}: {err}") from err
    return cpus


def _syscall_number() -> int:
    machine = platform.machine().lower()
    try:
        return _SYSCALL_NUMBERS[machine]
    except KeyError:
        raise PerfError(f"perf_event_open's number is not known for {machine}") from None


_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - one handle for the process
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _open(
    type_: int,
    config: int,
    cpu: int,
    flags: int,
    sample_type: int,
    *,
    wakeup_watermark: int = 0,
) -> int:
    attr = _ATTR.pack(
        type_, _ATTR.size, config, 1, sample_type, 0,
        flags | _DISABLED | _SAMPLE_ID_ALL | _USE_CLOCKID,
        wakeup_watermark, 0, 0, 0, 0, 0, 0, _CLOCK_MONOTONIC, 0, 0, 0, 0,
    )  # fmt: skip
    buf = ctypes.create_string_buffer(attr, _ATTR.size)
    libc = _syscall()
    fd = libc.syscall(
        ctypes.c_long(_syscall_number()),
        buf,
        ctypes.c_int(-1),
        ctypes.c_int(cpu),
        ctypes.c_int(-1),
        ctypes.c_ulong(_PERF_FLAG_FD_CLOEXEC),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise PerfError(f"perf_event_open failed on CPU {cpu}: {os.strerror(err)}", err)
    return int(fd)


@dataclass(slots=True)
class PerfEvent:
    """One open perf event: its file descriptor and the id its records carry.

    Attributes:
        fd: the perf event's file descriptor (close with :meth:`close`).
        id: ``PERF_EVENT_IOC_ID``, matched against each sample's identifier.
    """

    fd: int
    id: int

    def enable(self) -> None:
        """Start counting (``PERF_EVENT_IOC_ENABLE``).

        Raises:
            PerfError: the ioctl failed.
        """
        _ioctl(self.fd, _IOC_ENABLE, 0)

    def redirect_to(self, ring_owner: PerfEvent) -> None:
        """Write this event's records into ``ring_owner``'s ring (same CPU).

        Raises:
            PerfError: the ioctl failed.
        """
        _ioctl(self.fd, _IOC_SET_OUTPUT, ring_owner.fd)

    def set_filter(self, expression: str) -> None:
        """Filter samples in the kernel with an ftrace filter expression.

        Raises:
            PerfError: the kernel refused the expression (EINVAL).
        """
        buf = ctypes.create_string_buffer(expression.encode("ascii"))
        libc = _syscall()
        if libc.ioctl(ctypes.c_int(self.fd), ctypes.c_ulong(_IOC_SET_FILTER), buf) != 0:
            err = ctypes.get_errno()
            raise PerfError(f"tracepoint filter {expression!r} refused: {os.strerror(err)}", err)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _ioctl(fd: int, request: int, arg: int) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as err:
        raise PerfError(f"perf ioctl {request:#x} failed: {err}", err.errno) from err


def _event_id(fd: int) -> int:
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, _IOC_ID, buf)
    except OSError as err:
        raise PerfError(f"PERF_EVENT_IOC_ID failed: {err}", err.errno) from err
    return int(struct.unpack("<Q", buf)[0])


def _opened(fd: int) -> PerfEvent:
    try:
        return PerfEvent(fd, _event_id(fd))
    except PerfError:
        os.close(fd)
        raise


def open_dummy(cpu: int, wakeup_watermark: int) -> PerfEvent:
    """The software dummy event of one CPU carrying task records.

    Its records: ``PERF_RECORD_COMM`` (with ``PERF_RECORD_MISC_COMM_EXEC``
    after an exec), ``FORK``, ``EXIT`` and ``NAMESPACES`` for every task
    scheduled on ``cpu``, each followed by the sample-id trailer of
    :data:`SAMPLE_TYPE`. Timestamps are CLOCK_MONOTONIC nanoseconds
    (tracepoint events refuse CLOCK_BOOTTIME, which is not NMI-safe:
    kernel/events/core.c ``perf_event_set_clock``).

    Args:
        cpu: CPU number.
        wakeup_watermark: bytes in the ring that wake a poll(2) waiter.

    Raises:
        PerfError: perf_event_open refused (EACCES/EPERM without privilege).
    """
    flags = _COMM | _TASK | _COMM_EXEC | _NAMESPACES | _WATERMARK
    fd = _open(
        PERF_TYPE_SOFTWARE,
        PERF_COUNT_SW_DUMMY,
        cpu,
        flags,
        SAMPLE_TYPE,
        wakeup_watermark=wakeup_watermark,
    )
    return _opened(fd)


def open_tracepoint(tracepoint: TracepointFormat, cpu: int) -> PerfEvent:
    """A tracepoint event on one CPU, sampling every hit with its raw record.

    Raises:
        PerfError: perf_event_open refused.
    """
    fd = _open(PERF_TYPE_TRACEPOINT, tracepoint.id, cpu, 0, SAMPLE_TYPE | PERF_SAMPLE_RAW)
    return _opened(fd)


_HEAD_OFFSET: Final = 1024
_TAIL_OFFSET: Final = 1032
_U64: Final = struct.Struct("<Q")


class Ring:
    """The mmap'd ring of one perf event: a metadata page, then 2^n data pages.

    Args:
        event: the event whose ring this is.
        data_pages: number of data pages, a power of two.

    Raises:
        PerfError: mmap failed (for example the locked-memory limit,
            ``perf_event_mlock_kb``, is exhausted).
    """

    def __init__(self, event: PerfEvent, data_pages: int) -> None:
        if data_pages <= 0 or data_pages & (data_pages - 1):
            raise PerfError(f"ring size must be a power of two pages, not {data_pages}")
        self.event = event
        self.page = mmap.PAGESIZE
        self.size = data_pages * self.page
        try:
            self._map = mmap.mmap(
                event.fd,
                self.size + self.page,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError as err:
            raise PerfError(
                f"cannot map a {self.size // 1024} KiB perf ring: {err}", err.errno
            ) from err

    def read(self) -> bytes:
        """Take every complete record now in the ring, and free their space.

        Returns:
            the records' bytes in ring order (each record starts with the
            8-byte ``struct perf_event_header``: u32 type, u16 misc, u16 size).
        """
        m = self._map
        head = _U64.unpack_from(m, _HEAD_OFFSET)[0]
        tail = _U64.unpack_from(m, _TAIL_OFFSET)[0]
        if head == tail:
            return b""
        size, base = self.size, self.page
        start = tail % size
        length = head - tail
        if start + length <= size:
            data = m[base + start : base + start + length]
        else:
            first = size - start
            data = m[base + start : base + size] + m[base : base + length - first]
        _U64.pack_into(m, _TAIL_OFFSET, head)
        return data

    def close(self) -> None:
        """Unmap the ring (idempotent)."""
        if not self._map.closed:
            self._map.close()
