"""Process details for socket owners, cached by (pid, process start time).

Uses psutil's ``Process.oneshot()``. A process that vanished or denies access
is an expected outcome: its fields stay unknown (None) and a counter says why.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Final

import psutil

from extension.model import ProcessInfo

__all__ = ["MAX_CMDLINE_CHARS", "ProcessTracker"]

MAX_CMDLINE_CHARS: Final = 4096
"""cmdline longer than this is cut and ends with :data:`TRUNCATION_MARKER`."""
TRUNCATION_MARKER: Final = "...[truncated]"

_UNKNOWN = ProcessInfo()


def _clean(text: str | None) -> str | None:
    """Make ``text`` valid UTF-8: surrogate-escaped bytes become U+FFFD."""
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8")


def _cap(cmdline: str) -> str:
    if len(cmdline) <= MAX_CMDLINE_CHARS:
        return cmdline
    return cmdline[: MAX_CMDLINE_CHARS - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


class ProcessTracker:
    """Looks up and caches :class:`ProcessInfo` for pids.

    The cache key is (pid, start time in seconds since the Unix epoch), so a
    reused pid never lends its new owner's identity to an older entry.

    Attributes:
        skipped: count of failed lookups, keyed by reason ('no_such_process',
            'access_denied', 'zombie', 'error').
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, float], ProcessInfo] = {}
        self.skipped: Counter[str] = Counter()

    def lookup(self, pid: int | None) -> ProcessInfo:
        """Return what is known of ``pid``; every field None when nothing is.

        Never raises for a process that vanished or denies access.
        """
        if pid is None or pid < 0:
            return _UNKNOWN
        try:
            proc = psutil.Process(pid)
            created = proc.create_time()
        except psutil.Error as err:
            self._count(err)
            return _UNKNOWN
        key = (pid, created)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        info = self._read(proc, created)
        with self._lock:
            self._cache[key] = info
        return info

    def forget_except(self, live_pids: set[int]) -> None:
        """Drop cache entries whose pid is not in ``live_pids``."""
        with self._lock:
            for key in [k for k in self._cache if k[0] not in live_pids]:
                del self._cache[key]

    def _count(self, err: psutil.Error) -> None:
        if isinstance(err, psutil.NoSuchProcess):
            reason = "zombie" if isinstance(err, psutil.ZombieProcess) else "no_such_process"
        elif isinstance(err, psutil.AccessDenied):
            reason = "access_denied"
        else:
            reason = "error"
        self._skip(reason)

    def _skip(self, reason: str) -> None:
        with self._lock:
            self.skipped[reason] += 1

    def _read(self, proc: psutil.Process, created: float) -> ProcessInfo:
        fields: dict[str, object] = {"start_time": int(created)}
        with proc.oneshot():
            for attr, reader in (
                ("name", proc.name),
                ("path", proc.exe),
                ("cmdline", lambda: " ".join(proc.cmdline())),
                ("uid", lambda: proc.uids().real),
                ("username", proc.username),
                ("parent", proc.ppid),
            ):
                try:
                    fields[attr] = reader()
                except psutil.Error as err:
                    self._count(err)
                except (OSError, ValueError, KeyError):
                    # username() raises KeyError for a uid with no passwd entry.
                    self._skip("error")
        parent = fields.get("parent")
        if isinstance(parent, int) and parent > 0:
            try:
                pproc = psutil.Process(parent)
                with pproc.oneshot():
                    fields["parent_name"] = pproc.name()
                    fields["parent_path"] = pproc.exe()
            except psutil.Error as err:
                self._count(err)
        cmdline = fields.get("cmdline")
        return ProcessInfo(
            name=_clean(_as_str(fields.get("name"))),
            path=_clean(_as_str(fields.get("path"))) or None,
            cmdline=_cap(_clean(cmdline) or "") if isinstance(cmdline, str) else None,
            uid=_as_int(fields.get("uid")),
            username=_clean(_as_str(fields.get("username"))),
            parent=_as_int(parent),
            parent_name=_clean(_as_str(fields.get("parent_name"))),
            parent_path=_clean(_as_str(fields.get("parent_path"))) or None,
            start_time=_as_int(fields.get("start_time")),
        )


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
