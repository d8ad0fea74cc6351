"""Task table: every process on the host, kept up to date from kernel task records.

The kernel event source feeds it perf's task records (``PERF_RECORD_FORK``,
``EXIT``, ``COMM``, ``NAMESPACES``) and the ``sched:sched_process_exec``
tracepoint, so that a connection made by a process that exits a millisecond
later can still be described: its name, executable, parent, start time and
network namespace are known from the records even when ``/proc/<pid>`` is
already gone.

What each record teaches (Linux include/uapi/linux/perf_event.h,
kernel/events/core.c):

* FORK (pid, ppid, tid, ptid, time): a new task. A new *process* when
  ``pid != ppid``; otherwise a thread of ``pid``. The child starts as a copy
  of its parent: same name, executable, command line, real uid and
  namespaces (fork(2)).
* COMM (pid, tid, comm; ``PERF_RECORD_MISC_COMM_EXEC`` when caused by an
  exec): the task's 15-character ``comm``.
* sched_process_exec (filename, pid): the program the process now runs.
  The command line of the new program is not in any record: it is read
  from ``/proc/<pid>/cmdline`` while the process lives (see
  linux_events.py), and otherwise unknown.
* NAMESPACES (pid, tid, then (dev, inode) per namespace, the network
  namespace first): sent at fork, ``unshare(2)`` and ``setns(2)``. A thread
  may sit in another network namespace than its process.
* EXIT (pid, ppid, tid, ptid, time): a task ended; the process when
  ``tid == pid``.

Start times follow psutil's ``Process.create_time()`` on Linux (psutil
``_pslinux.py``): ``btime`` from ``/proc/stat`` plus field 22 of
``/proc/<pid>/stat`` (clock ticks since boot) divided by ``SC_CLK_TCK``, so
a task seen only through events gets the same ``start_time`` as one read
with psutil.

Memory is bounded: running processes (as many as the host has), plus at
most ``max_exited`` exited ones, each kept ``exited_ttl_secs`` seconds.
Not thread-safe: the event source's thread owns it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from extension.collect.normalize import COMM_LEN, full_process_name

__all__ = ["Task", "TaskTable", "boot_time", "read_task"]

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(slots=True)
class Task:
    """What is known of one process.

    Attributes:
        pid: process id (thread group id).
        ppid: parent process id, or None.
        start_ticks: start, clock ticks since boot (``/proc/<pid>/stat``
            field 22 or the FORK record's time).
        comm: the kernel's name of the process (at most 15 characters).
        exe: executable path, or None.
        netns: network namespace inode, or None.
        execs: programs run since first seen (0: still its parent's image
            or the one it was first seen with).
        cmdline: command line when known (read from /proc, or inherited at
            fork), else None.
        uid: real user id when known, else None.
        exited: monotonic seconds when it exited, or None while it runs.
        thread_netns: thread id -> network namespace, for threads that moved
            into another namespace than their process.
    """

    pid: int
    ppid: int | None
    start_ticks: int
    comm: str
    exe: str | None = None
    netns: int | None = None
    execs: int = 0
    cmdline: str | None = None
    uid: int | None = None
    exited: float | None = None
    thread_netns: dict[int, int] = field(default_factory=dict)

    def start_time(self, boot: float) -> int:
        """Start in whole seconds since the Unix epoch, as psutil computes it."""
        return int(boot + self.start_ticks / _CLK_TCK)

    def full_name(self) -> str:
        """The process name, whole where the kernel cut it (see full_process_name).

        For a script run by an interpreter, ``exe`` here is the script (the
        path given to execve), which gives the whole name.
        """
        cmdline = self.cmdline.split(" ") if self.cmdline else []
        return full_process_name(self.comm, self.exe, cmdline) or self.comm


def boot_time(proc_root: str = "/proc") -> float:
    """``btime`` from ``<proc_root>/stat``: boot, seconds since the Unix epoch.

    Raises:
        OSError: the file cannot be read.
        ValueError: it has no btime line.
    """
    with open(f"{proc_root}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError(f"no btime line in {proc_root}/stat")


def read_task(proc_root: str, pid: int) -> Task | None:
    """Read one running process from procfs; None when it is gone or unreadable.

    Reads ``stat`` (name, parent, start), the ``exe`` link and the
    ``ns/net`` link (proc(5)).
    """
    base = f"{proc_root}/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        open_paren = stat.index(b"(")
        close_paren = stat.rindex(b")")
        comm = stat[open_paren + 1 : close_paren].decode("utf-8", "replace")
        fields = stat[close_paren + 2 :].split()
        ppid = int(fields[1])
        start_ticks = int(fields[19])
    except (ValueError, IndexError):
        return None
    task = Task(pid=pid, ppid=ppid or None, start_ticks=start_ticks, comm=comm)
    with contextlib.suppress(OSError):
        task.exe = os.readlink(f"{base}/exe")
    try:
        link = os.readlink(f"{base}/ns/net")
        if link.startswith("net:[") and link.endswith("]"):
            task.netns = int(link[5:-1])
    except (OSError, ValueError):
        pass
    return task


class TaskTable:
    """Processes by pid, from procfs at start and kernel task records after.

    Args:
        proc_root: procfs mount point.
        exited_ttl_secs: seconds an exited process is remembered.
        max_exited: at most this many exited processes are remembered.
        clock: monotonic seconds (injectable for tests).

    Attributes:
        boot: boot time, seconds since the Unix epoch (``btime``).
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        exited_ttl_secs: float = 300.0,
        max_exited: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = proc_root
        self.exited_ttl_secs = exited_ttl_secs
        self.max_exited = max_exited
        self._clock = clock
        self._tasks: dict[int, Task] = {}
        self._exited: OrderedDict[int, Task] = OrderedDict()
        try:
            self.boot = boot_time(proc_root)
        except (OSError, ValueError):
            self.boot = time.time() - time.monotonic()

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def exited_count(self) -> int:
        """Exited processes still remembered."""
        return len(self._exited)

    def seed(self) -> int:
        """Read every running process from procfs; returns how many were read."""
        try:
            names = os.listdir(self._root)
        except OSError:
            return 0
        count = 0
        for name in names:
            if name.isdigit():
                task = read_task(self._root, int(name))
                if task is not None:
                    self._tasks.setdefault(task.pid, task)
                    count += 1
        return count

    def get(self, pid: int) -> Task | None:
        """The running process ``pid``, else the last one that exited with that pid."""
        task = self._tasks.get(pid)
        if task is None:
            task = self._exited.get(pid)
        return task

    def running(self, pid: int) -> Task | None:
        """The running process ``pid``, or None; reads procfs for a pid never seen."""
        task = self._tasks.get(pid)
        if task is None:
            task = read_task(self._root, pid)
            if task is not None:
                self._tasks[pid] = task
        return task

    def netns(self, pid: int, tid: int) -> int | None:
        """Network namespace of thread ``tid`` of process ``pid``, when known."""
        task = self.running(pid)
        if task is None:
            task = self._exited.get(pid)
            if task is None:
                return None
        return task.thread_netns.get(tid, task.netns)

    # ------------------------------------------------------------ records

    def fork(self, pid: int, ppid: int, tid: int, start_ticks: int) -> None:
        """A FORK record: a new process when ``pid != ppid``, else a new thread."""
        if pid == ppid:
            return
        parent = self._tasks.get(ppid)
        child = Task(pid=pid, ppid=ppid, start_ticks=start_ticks, comm="")
        if parent is not None:
            child.comm = parent.comm
            child.exe = parent.exe
            child.netns = parent.thread_netns.get(tid, parent.netns)
            child.cmdline = parent.cmdline
            child.uid = parent.uid
        old = self._tasks.get(pid)
        if old is not None:  # the pid's previous holder exited unseen
            self._remember(old)
        self._tasks[pid] = child

    def comm(self, pid: int, tid: int, comm: str) -> None:
        """A COMM record: the process (``tid == pid``) was named ``comm``."""
        if pid != tid:
            return
        task = self.running(pid)
        if task is not None:
            task.comm = comm

    def exec(self, pid: int, filename: str) -> None:
        """sched_process_exec: the process runs the program ``filename`` now."""
        task = self.running(pid)
        if task is None:
            return
        task.execs += 1
        task.exe = filename if filename.startswith("/") else task.exe
        task.cmdline = None
        base = os.path.basename(filename)
        if base:
            task.comm = base[:COMM_LEN]

    def namespaces(self, pid: int, tid: int, netns: int) -> None:
        """A NAMESPACES record: thread ``tid`` is in network namespace ``netns``."""
        task = self.running(pid)
        if task is None:
            return
        if tid == pid:
            task.netns = netns
            task.thread_netns.pop(tid, None)
        elif netns != task.netns:
            task.thread_netns[tid] = netns
        else:
            task.thread_netns.pop(tid, None)

    def exit(self, pid: int, tid: int) -> None:
        """An EXIT record: the process ended when ``tid == pid``."""
        if tid != pid:
            task = self._tasks.get(pid)
            if task is not None:
                task.thread_netns.pop(tid, None)
            return
        task = self._tasks.pop(pid, None)
        if task is not None:
            self._remember(task)
        self._expire()

    def _remember(self, task: Task) -> None:
        task.exited = self._clock()
        task.thread_netns.clear()
        self._exited.pop(task.pid, None)
        self._exited[task.pid] = task
        while len(self._exited) > self.max_exited:
            self._exited.popitem(last=False)

    def _expire(self) -> None:
        limit = self._clock() - self.exited_ttl_secs
        while self._exited:
            task = next(iter(self._exited.values()))
            if task.exited is not None and task.exited >= limit:
                break
            self._exited.popitem(last=False)
