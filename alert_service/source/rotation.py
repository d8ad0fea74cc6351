"""Find the rotated siblings of a results log, oldest first, with their heads.

Two naming schemes are recognised (docs/design/osquery-interfaces.md §4):

* numbered — osquery ``--logger_rotate`` (plugins/logger/logrotate.h): the log is
  renamed to ``<name>.1`` (plain), older ones become ``<name>.2.zst``, ``.3.zst`` …;
  logrotate's ``<name>.N`` / ``<name>.N.gz`` follow the same pattern. A larger N is
  older.
* timestamped — Fleet's filesystem logger rotates with lumberjack: backups are
  ``<stem>-YYYY-MM-DDTHH-MM-SS.mmm<ext>`` with an optional ``.gz`` (``osquery_result``
  → ``osquery_result-2025-09-02T07-05-09.000``; ``results.log`` →
  ``results-2025-09-02T07-05-09.000.log``). An earlier timestamp is older.

When a plain and a compressed copy of the same rotated file exist (compression in
progress), only the plain one is listed. Each sibling is opened while it is listed, so
its identity, head and open file agree even if a rotation renames it a moment later.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from alert_service.logs import log_event
from alert_service.source.files import CONTENT_ERRORS, ContentFile, compression_of
from alert_service.source.records import FINGERPRINT_BYTES, FileIdentity

__all__ = ["Sibling", "is_rotated_name", "list_siblings", "same_content"]

_log = logging.getLogger(__name__)

_NUMBERED_TAIL = re.compile(r"\.([0-9]{1,6})(\.zst|\.gz)?")
_STAMP = r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2}\.[0-9]{3})"
_ANY_ROTATED = re.compile(r".*(\.[0-9]{1,6}(\.zst|\.gz)?|-" + _STAMP + r"[^/]*|\.zst|\.gz)")


def is_rotated_name(name: str) -> bool:
    """True when a file name looks like a rotated or compressed log (never followed live).

    Used to keep a glob such as ``/var/log/fleet/*`` from following backups as live
    logs, which would read their lines twice.
    """
    return _ANY_ROTATED.fullmatch(os.path.basename(name)) is not None


def same_content(a: bytes, b: bytes) -> bool:
    """True when two heads show the same file content (one is a prefix of the other).

    Empty heads show nothing and never match.
    """
    if not a or not b:
        return False
    return a.startswith(b) if len(a) >= len(b) else b.startswith(a)


@dataclass(eq=False, slots=True)
class Sibling:
    """A rotated sibling, opened.

    Attributes:
        file: the open file (the caller closes it, or hands it to a reader).
        order: sort key, smaller is older.
        mtime: modification time, seconds since the Unix epoch.
        head: first content bytes, at most :data:`FINGERPRINT_BYTES`.
    """

    file: ContentFile
    order: tuple[int, str, int]
    mtime: float
    head: bytes = field(default=b"")

    @property
    def identity(self) -> FileIdentity:
        """(device, inode) of the open file."""
        return self.file.identity

    @property
    def path(self) -> str:
        """The name it was opened by."""
        return self.file.path


def _candidates(path: str) -> list[tuple[tuple[int, str, int], str]]:
    directory, name = os.path.split(path)
    try:
        entries = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    except OSError as err:
        # The live file may still be readable (x without r on the directory), but
        # rotated files cannot be found: say so instead of losing them silently.
        log_event(
            _log,
            logging.WARNING,
            "source_directory_unreadable",
            path=path,
            directory=directory or ".",
            reason=err.strerror or str(err),
            effect="rotated files of this log cannot be found",
        )
        return []
    stem, ext = os.path.splitext(name)
    stamped = re.compile(re.escape(stem) + "-" + _STAMP + re.escape(ext) + r"(\.gz)?")
    found: dict[tuple[int, str, int], str] = {}
    for entry in entries:
        key: tuple[int, str, int] | None = None
        if entry.startswith(name + "."):
            m = _NUMBERED_TAIL.fullmatch(entry, len(name))
            if m is not None:
                # Larger N is older: sort by -N; plain (0) before compressed (1).
                key = (0, "", -int(m.group(1)))
        if key is None:
            m2 = stamped.fullmatch(entry)
            if m2 is not None:
                key = (1, m2.group(1), 0)
        if key is None:
            continue
        full = os.path.join(directory, entry)
        previous = found.get(key)
        # The same rotated file plain and compressed: keep the plain one.
        if previous is None or compression_of(previous) is not None:
            found[key] = full
    return sorted(found.items())


def list_siblings(path: str, on_unreadable: Callable[[str], None] | None = None) -> list[Sibling]:
    """Open and list the rotated siblings of ``path``, oldest first.

    Files that vanish while being listed are left out; so are files that cannot be
    read (logged, and ``on_unreadable`` called with their path) and empty files (they
    hold nothing to read).

    Args:
        path: the live log's path (it need not exist).
        on_unreadable: called once per unreadable sibling (e.g. corrupt compressed data).

    Returns:
        The siblings; the caller owns their open files.
    """
    out: list[Sibling] = []
    for order, full in _candidates(path):
        try:
            cf = ContentFile.open(full, compression_of(full))
        except FileNotFoundError:
            continue
        except OSError as err:
            log_event(
                _log,
                logging.WARNING,
                "source_rotated_file_unreadable",
                path=full,
                reason=err.strerror or str(err),
            )
            if on_unreadable is not None:
                on_unreadable(full)
            continue
        try:
            st = cf.stat()
            head = cf.head(FINGERPRINT_BYTES)
        except CONTENT_ERRORS as err:
            cf.close()
            log_event(
                _log,
                logging.WARNING,
                "source_rotated_file_unreadable",
                path=full,
                reason=f"{type(err).__name__}: {err}",
            )
            if on_unreadable is not None:
                on_unreadable(full)
            continue
        if not head:
            cf.close()
            continue
        out.append(Sibling(cf, order, st.st_mtime, head))
    return out
