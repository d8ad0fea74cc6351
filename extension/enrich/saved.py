"""Rows that survive a restart: the table's served rows, saved to a file.

osqueryd restarts extensions on its own (watchdog, upgrades, config
reloads), and an osqueryd restart restarts them too. A differential query
compares each run's rows with the last run's: a connection that lives
through a restart must come back with exactly the columns it had, or
osquery logs it ``removed`` and ``added`` again and every matching rule
alerts anew. So the rows already shown to osqueryd are saved, and a
restarted extension gives a connection it finds again (same socket and
addresses) the row it had.

File format (JSON, written to a temporary file and renamed over the old
one, mode 0600 since command lines are in it)::

    {"version": 1, "boot_id": "...", "saved_at": 1733400000.0,
     "rows": [{"identity": [...] | null, "row": {column: text},
               "closed_at": seconds | null, "state": "..."}, ...]}

``boot_id`` is the kernel's boot id (``/proc/sys/kernel/random/boot_id`` on
Linux, the boot time elsewhere): socket inodes are reused after a reboot,
so a file from another boot is ignored.

Errors never stop the extension: a file that cannot be read or written is
logged and reported in ``tracked_connections_stats`` (``state_error``), and
the table works as if there were none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson
import psutil

__all__ = ["DEFAULT_STATE_FILE", "RowStore", "SavedRow", "boot_id"]

log = logging.getLogger(__name__)

_VERSION: Final = 1
_MAX_FILE_BYTES: Final = 256 * 1024 * 1024


def _default_state_file() -> str:
    if sys.platform == "win32":
        base = os.environ.get("PROGRAMDATA", r"C:\ProgramData")
        return os.path.join(base, "osquery", "tracked_connections.state")
    return "/var/osquery/tracked_connections.state"


DEFAULT_STATE_FILE: Final = _default_state_file()
"""Beside osqueryd's own database (``--database_path`` defaults to
/var/osquery/osquery.db; osquery's Windows packages use
C:\\ProgramData\\osquery)."""


@dataclass(frozen=True, slots=True)
class SavedRow:
    """One served row as saved.

    Attributes:
        identity: the key the sampler knows the connection's socket by
            (``("inode", netns, inode)`` on Linux, ``("tuple", pid, ...)``
            elsewhere), or None for a row known only from kernel events.
        row: the stable columns exactly as served, ``dict[str, str]``.
        closed_at: seconds since the Unix epoch when it closed, or None.
        state: its last TCP state ('' for UDP).
    """

    identity: tuple[Any, ...] | None
    row: dict[str, str]
    closed_at: float | None
    state: str


def boot_id() -> str:
    """An identifier of this boot of the host."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return f"boot-time:{int(psutil.boot_time())}"


class RowStore:
    """Reads and writes the saved rows of one state file.

    Args:
        path: the state file; None turns saving off.

    Attributes:
        error: the last read or write problem, '' when none.
        restored: rows read at start.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.error = ""
        self.restored = 0
        self._boot = boot_id()

    def load(self) -> list[SavedRow]:
        """The rows saved during this boot; [] when there are none or they are unusable."""
        if self.path is None:
            return []
        try:
            with open(self.path, "rb") as f:
                data = f.read(_MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            return []
        except OSError as err:
            return self._failed(f"cannot read {self.path}: {err}")
        if len(data) > _MAX_FILE_BYTES:
            return self._failed(f"{self.path} is larger than {_MAX_FILE_BYTES} bytes")
        try:
            doc = orjson.loads(data)
            if doc.get("version") != _VERSION:
                return self._failed(f"{self.path}: unknown version {doc.get('version')!r}")
            if doc.get("boot_id") != self._boot:
                log.info("%s is from another boot of the host; starting afresh", self.path)
                return []
            rows = [_saved(item) for item in doc["rows"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            return self._failed(f"{self.path} is not a saved table: {err}")
        self.restored = len(rows)
        return rows

    def save(self, rows: list[SavedRow]) -> bool:
        """Replace the file with ``rows`` (atomically); True when written."""
        if self.path is None:
            return False
        doc = {
            "version": _VERSION,
            "boot_id": self._boot,
            "saved_at": time.time(),
            "rows": [
                {
                    "identity": list(r.identity) if r.identity is not None else None,
                    "row": r.row,
                    "closed_at": r.closed_at,
                    "state": r.state,
                }
                for r in rows
            ],
        }
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, temp = tempfile.mkstemp(prefix=".tracked_connections.", dir=directory)
        except OSError as err:
            self._failed(f"cannot write in {directory}: {err.strerror or err}")
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            self._failed(f"cannot write {self.path}: {err.strerror or err}")
            return False
        if self.error:
            log.info("%s is written again", self.path)
        self.error = ""
        return True

    def _failed(self, problem: str) -> list[SavedRow]:
        if problem != self.error:
            log.warning("%s; connections that live through a restart will be logged again", problem)
        self.error = problem
        return []


def _saved(item: dict[str, Any]) -> SavedRow:
    identity = item["identity"]
    row = item["row"]
    if not isinstance(row, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in row.items()
    ):
        raise ValueError("a row is not a mapping of text to text")
    closed_at = item.get("closed_at")
    return SavedRow(
        identity=tuple(identity) if identity is not None else None,
        row=row,
        closed_at=float(closed_at) if closed_at is not None else None,
        state=str(item.get("state", "")),
    )
