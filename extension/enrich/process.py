"""Process tracker: details of socket owners, kept past the owner's exit.

Every sample calls :meth:`ProcessTracker.refresh`, which lists the host's pids
and reads the details of pids it has not seen yet (psutil ``oneshot()``). A
process that exits is kept for ``exited_ttl_secs`` seconds and at most
``max_exited`` entries, so a connection whose process died before the
connection was first observed still gets its name, path, cmdline and user.

Entries are keyed by (pid, process start time): a pid that the OS reuses is
read again, so a new owner never lends its identity to an older connection.
A process can also exec another program under the same pid and start time,
so :meth:`ProcessTracker.lookup`, which runs once per new connection, reads
the process afresh at most once per sample instead of trusting the cache: a
program that starts harmless and execs ``nc`` is reported as ``nc``.
A process that vanishes mid-read or denies access is an expected outcome: its
fields stay unknown (None) and :attr:`ProcessTracker.skipped` counts why.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Final

import psutil

from extension.collect.normalize import full_process_name
from extension.columns import MAX_TEXT, TRUNCATION_MARKER, cap_text
from extension.model import ProcessInfo

__all__ = ["MAX_CMDLINE_CHARS", "TRUNCATION_MARKER", "ProcessTracker", "clean_text"]

MAX_CMDLINE_CHARS: Final = MAX_TEXT["cmdline"]
"""A cmdline longer than this many characters is cut and ends with TRUNCATION_MARKER
(cut here already, so a huge argv is not kept in memory either)."""

_UNKNOWN: Final = ProcessInfo()


def clean_text(text: str | None) -> str | None:
    """Make ``text`` valid UTF-8 for the Thrift reply.

    psutil decodes OS bytes with ``surrogateescape``; each byte that is not
    valid UTF-8 becomes U+FFFD here, and the rest of the text is kept.
    """
    if text is None:
        return None
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return raw.decode("utf-8", "replace")


def cap_cmdline(cmdline: str) -> str:
    """Cut ``cmdline`` to MAX_CMDLINE_CHARS characters, ending with TRUNCATION_MARKER."""
    return cap_text(cmdline, MAX_CMDLINE_CHARS)


def _reason(err: BaseException) -> str:
    if isinstance(err, psutil.ZombieProcess):
        return "zombie"
    if isinstance(err, psutil.NoSuchProcess):
        return "no_such_process"
    if isinstance(err, psutil.AccessDenied):
        return "access_denied"
    return "error"


class ProcessTracker:
    """Looks up, caches and remembers process details.

    Args:
        exited_ttl_secs: seconds an exited process stays known.
        max_exited: at most this many exited processes are remembered.
        clock: monotonic seconds (injectable for tests).

    Attributes:
        skipped: failed reads, keyed by reason: 'no_such_process',
            'access_denied', 'zombie' or 'error'.
    """

    def __init__(
        self,
        exited_ttl_secs: float = 300.0,
        max_exited: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exited_ttl_secs = exited_ttl_secs
        self.max_exited = max_exited
        self._clock = clock
        self._lock = threading.Lock()
        # pid -> (start time as psutil reports it, details) for running processes.
        self._live: dict[int, tuple[float, ProcessInfo]] = {}
        # pid -> (exit noticed at, details), oldest first.
        self._exited: OrderedDict[int, tuple[float, ProcessInfo]] = OrderedDict()
        # pids read since the last refresh(): their cached details are current.
        self._fresh: set[int] = set()
        self.skipped: Counter[str] = Counter()

    @property
    def live_count(self) -> int:
        """Running processes currently cached."""
        return len(self._live)

    @property
    def exited_count(self) -> int:
        """Exited processes still remembered."""
        return len(self._exited)

    def refresh(self) -> None:
        """Notice new and exited processes; read details of new ones.

        Never raises for processes that vanish or deny access.
        """
        try:
            pids = set(psutil.pids())
        except (psutil.Error, OSError):
            self._skip("error")
            return
        with self._lock:
            gone = [pid for pid in self._live if pid not in pids]
            now = self._clock()
            for pid in gone:
                _, info = self._live.pop(pid)
                self._remember_exited(pid, info, now)
            new = [pid for pid in pids if pid not in self._live]
            self._fresh.clear()
        for pid in new:
            self._read_live(pid)
        self._expire()

    def lookup(self, pid: int | None) -> ProcessInfo:
        """Details of the process that holds ``pid`` now, or held it last.

        A running process is read afresh unless it was already read since the
        last :meth:`refresh` (it may have exec'd another program); an exited
        one comes from memory.

        Returns:
            ProcessInfo; every field None when nothing is known.
        """
        if pid is None or pid < 0:
            return _UNKNOWN
        try:
            proc = psutil.Process(pid)
            started = proc.create_time()
        except psutil.NoSuchProcess:
            with self._lock:
                live = self._live.get(pid)
                exited = self._exited.get(pid)
            if live is not None:
                return live[1]
            return exited[1] if exited is not None else _UNKNOWN
        except psutil.Error as err:
            self._skip(_reason(err))
            return _UNKNOWN
        with self._lock:
            live = self._live.get(pid)
            fresh = pid in self._fresh
        if fresh and live is not None and live[0] == started:
            return live[1]
        info = self._read_live(pid, proc)
        if info is None:
            return live[1] if live is not None and live[0] == started else _UNKNOWN
        return info

    def _read_live(self, pid: int, proc: psutil.Process | None = None) -> ProcessInfo | None:
        try:
            if proc is None:
                proc = psutil.Process(pid)
            started = proc.create_time()
        except psutil.Error as err:
            self._skip(_reason(err))
            return None
        info = self._read(proc, started)
        with self._lock:
            previous = self._live.get(pid)
            if previous is not None and previous[0] != started:
                # The pid was reused: the old holder has exited.
                self._remember_exited(pid, previous[1], self._clock())
            self._live[pid] = (started, info)
            self._fresh.add(pid)
        return info

    def _remember_exited(self, pid: int, info: ProcessInfo, now: float) -> None:
        self._exited.pop(pid, None)
        self._exited[pid] = (now, info)
        while len(self._exited) > self.max_exited:
            self._exited.popitem(last=False)

    def _expire(self) -> None:
        limit = self._clock() - self.exited_ttl_secs
        with self._lock:
            while self._exited:
                pid, (noticed, _) = next(iter(self._exited.items()))
                if noticed >= limit:
                    break
                del self._exited[pid]

    def _skip(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] += 1

    def _parent(self, ppid: int | None) -> tuple[str | None, str | None]:
        if ppid is None or ppid <= 0:
            return None, None
        with self._lock:
            cached = self._live.get(ppid)
        if cached is not None:
            return cached[1].name, cached[1].path
        try:
            parent = psutil.Process(ppid)
            with parent.oneshot():
                return clean_text(parent.name()), clean_text(parent.exe()) or None
        except psutil.Error as err:
            self._skip(_reason(err))
            return None, None

    def _read(self, proc: psutil.Process, started: float) -> ProcessInfo:
        values: dict[str, object] = {}
        with proc.oneshot():
            readers: dict[str, Callable[[], object]] = {
                "name": proc.name,
                "path": proc.exe,
                "cmdline": proc.cmdline,
                "uid": lambda: proc.uids().real,
                "username": proc.username,
                "parent": proc.ppid,
            }
            for field, read in readers.items():
                try:
                    values[field] = read()
                except psutil.Error as err:
                    self._skip(_reason(err))
                except (OSError, ValueError, KeyError):
                    # username() raises KeyError for a uid with no passwd entry.
                    self._skip("error")
        parent = _as_int(values.get("parent"))
        parent_name, parent_path = self._parent(parent)
        argv = values.get("cmdline")
        cmdline = None
        args: list[str] = []
        if isinstance(argv, list):
            args = [str(a) for a in argv]
            cmdline = cap_cmdline(clean_text(" ".join(args)) or "")
        name = full_process_name(_as_str(values.get("name")), _as_str(values.get("path")), args)
        return ProcessInfo(
            name=clean_text(name),
            path=clean_text(_as_str(values.get("path"))) or None,
            cmdline=cmdline,
            uid=_as_int(values.get("uid")),
            username=clean_text(_as_str(values.get("username"))),
            parent=parent,
            parent_name=parent_name,
            parent_path=parent_path,
            start_time=int(started),
        )


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
