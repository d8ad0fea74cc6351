"""Records produced by the source stage."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

__all__ = ["FileIdentity", "SourceLine", "StartAt"]

StartAt = Literal["beginning", "end"]
"""Where to start in a file that already exists when following begins."""


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a line came from: ``(st_dev, st_ino)`` of the open file.

    A rename rotation keeps the identity of the renamed file and gives the path a new
    one; later work adds a head fingerprint to detect inode reuse and copytruncate
    (alerting-delivery-and-tailing.md §4.2).
    """

    dev: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        """Return the identity of a ``stat()``/``fstat()`` result."""
        return cls(st.st_dev, st.st_ino)


@dataclass(frozen=True, slots=True)
class SourceLine:
    """One complete line of a results log.

    Attributes:
        line: the line's bytes without the trailing ``\\n``.
        identity: (device, inode) of the file the line was read from.
        offset: byte offset in that file just after the line's ``\\n`` (for a last line
            without ``\\n``, read by replay, just after its last byte); this is the
            position a checkpoint stores.
        path: the path the file was opened by (it may have been renamed since).
    """

    line: bytes
    identity: FileIdentity
    offset: int
    path: str
