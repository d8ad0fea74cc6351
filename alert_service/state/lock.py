"""One running service per state directory: an exclusive lock on ``state_dir/run.lock``.

``run`` takes the lock before it opens the state database and keeps it until it
exits; the kernel drops it when the process ends, however it ends (``flock(2)`` locks
belong to the open file description, see the Linux man page flock(2)). The file holds
the owner's pid as decimal text, so a second ``run`` can name the process that holds
it. Read-only commands (``status``, ``outbox list``) do not take the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from alert_service.errors import AlertServiceError

__all__ = ["LOCK_FILE", "InstanceLock", "LockedError", "acquire_instance_lock"]

LOCK_FILE = "run.lock"
"""Name of the lock file inside ``state_dir``."""


class LockedError(AlertServiceError):
    """Another process holds the state directory's lock.

    Attributes:
        path: the lock file.
        pid: the holder's pid as written in the file, or None when unreadable.
    """

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{path}: the state directory is in use by {holder}")
        self.path = path
        self.pid = pid


class InstanceLock:
    """A held lock; :meth:`release` (or process exit) frees it.

    Attributes:
        path: the lock file.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock and close (idempotent). The file stays: removing it would race."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def acquire_instance_lock(state_dir: str | Path) -> InstanceLock:
    """Take the lock of ``state_dir`` (created if missing) without waiting.

    Returns:
        The held lock; the file now holds this process's pid.

    Raises:
        LockedError: another process holds it.
        OSError: the directory or file cannot be created or opened.
    """
    directory = Path(state_dir)
    # 0700 like the database beside it (the outbox holds command lines).
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = str(directory / LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise LockedError(path, pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return InstanceLock(path, fd)
