"""Records produced by the source stage."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

__all__ = [
    "FINGERPRINT_BYTES",
    "Compression",
    "FileIdentity",
    "LineChunk",
    "Position",
    "SourceLine",
    "StartAt",
    "fingerprint",
]

StartAt = Literal["beginning", "end"]
"""Where to start in a file that already exists when following begins."""

Compression = Literal["zst", "gz"]
"""How a rotated file is compressed: osquery ``.N.zst`` (zstd), lumberjack/logrotate
``.gz`` (gzip)."""

FINGERPRINT_BYTES = 1024
"""Bytes of a file's head that identify its content (docs/design/following-logs.md;
Filebeat's filestream input fingerprints the first 1024 bytes by default too, Elastic
Filebeat reference 8.x, "filestream input", ``prospector.scanner.fingerprint.length``)."""


def fingerprint(head: bytes) -> bytes:
    """Return the SHA-256 digest (32 bytes) of ``head``, a file's first bytes."""
    return hashlib.sha256(head).digest()


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a line came from: ``(st_dev, st_ino)`` of the open file.

    A rename rotation keeps the identity of the renamed file and gives the path a new
    one. Inode reuse and copytruncate keep the identity but change the content, which
    the head fingerprint of :class:`Position` detects (docs/design/following-logs.md).
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
            without ``\\n``, just after its last byte); the position a checkpoint
            stores. For a compressed file, offsets count decompressed bytes.
        path: the path the file was opened by (it may have been renamed since).
        terminated: False for a last line without ``\n`` (a finished file's
            unterminated tail); its first byte is then at ``offset - len(line)``,
            otherwise at ``offset - len(line) - 1`` (:attr:`start`).
    """

    line: bytes
    identity: FileIdentity
    offset: int
    path: str
    terminated: bool = True

    @property
    def start(self) -> int:
        """Byte offset of the line's first byte."""
        return self.offset - len(self.line) - (1 if self.terminated else 0)


@dataclass(slots=True)
class LineChunk:
    """Consecutive complete lines of one file, as the follower hands them out.

    Cheaper than one :class:`SourceLine` per line on the ingestion hot path; the
    offsets of single lines are computed only when needed (log messages).

    Attributes:
        identity: (device, inode) of the file.
        path: the path the file was opened by.
        start: byte offset of the first line's first byte (decompressed bytes for a
            compressed file).
        lines: the lines without their ``\\n``, in file order; never empty.
        terminated: False when the last line had no ``\\n`` (an unterminated tail
            flushed from a finished file); every other line always has one.
    """

    identity: FileIdentity
    path: str
    start: int
    lines: list[bytes]
    terminated: bool = True

    def ends(self) -> list[int]:
        """Return, per line, the byte offset just after it (after its ``\\n``)."""
        ends = list(accumulate((len(line) + 1 for line in self.lines), initial=self.start))[1:]
        if not self.terminated:
            ends[-1] -= 1
        return ends

    def location(self, index: int, skip: int = 0) -> dict[str, object]:
        """Where line ``index`` starts, for log events: ``path``, ``inode`` and
        ``offset`` (the byte ``skip`` bytes into the line).

        A stream source's chunk has fields of its own
        (:meth:`~alert_service.source.nats_batch.StreamChunk.location`).
        """
        start = self.ends()[index - 1] if index else self.start
        return {"path": self.path, "inode": self.identity.inode, "offset": start + skip}

    def source_lines(self) -> list[SourceLine]:
        """Return the lines as :class:`SourceLine` records."""
        ident, path = self.identity, self.path
        pairs = zip(self.lines, self.ends(), strict=True)
        out = [SourceLine(line, ident, end, path) for line, end in pairs]
        if not self.terminated:
            last = out[-1]
            out[-1] = SourceLine(last.line, ident, last.offset, path, terminated=False)
        return out


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading of one source stands: the checkpoint of a follower.

    Written to the state database in the same transaction as the alerts of every line
    before it (docs/design/following-logs.md, "Checkpoints commit with the work").

    Attributes:
        path: the file's path when the position was taken (the rotated name while a
            rotated file is drained).
        identity: (device, inode) of that file (of the compressed file itself for a
            ``.zst``/``.gz`` file).
        offset: bytes of (decompressed) content consumed; the next line starts here.
            Never inside a line: a partial last line is not consumed.
        fingerprint: :func:`fingerprint` of the first ``fingerprint_bytes`` bytes of
            the (decompressed) content.
        fingerprint_bytes: how many head bytes the fingerprint covers, at most
            :data:`FINGERPRINT_BYTES`; fewer while the file is shorter, the next
            position covers more as the file grows. 0 for an empty file.
    """

    path: str
    identity: FileIdentity
    offset: int
    fingerprint: bytes
    fingerprint_bytes: int
