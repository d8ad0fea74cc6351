"""Split a byte stream into complete lines with a length cap."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
"""Default cap on one line, in bytes, without the newline (1 MiB)."""


class LineSplitter:
    """Cut chunks of a file into complete ``\\n``-terminated lines.

    Only complete lines come out: bytes after the last ``\\n`` stay buffered until the
    rest of the line arrives. A line longer than ``max_line_bytes`` (newline excluded) is
    dropped as soon as it is known to be too long, ``on_too_long`` is called once for
    it, and reading resumes after its newline — the buffer never holds more than
    ``max_line_bytes`` bytes.

    Args:
        max_line_bytes: longest accepted line in bytes, newline excluded; at least 1.
        on_too_long: called with the file offset where the skipped line starts.
        offset: file offset of the first byte that will be fed.

    Attributes:
        offset: file offset just after the last byte fed.
    """

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_too_long: Callable[[int], None] | None = None,
        offset: int = 0,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.offset = offset
        self._on_too_long = on_too_long
        self._buffer = bytearray()
        self._line_start = offset
        self._skipping = False

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unterminated line held in the buffer."""
        return len(self._buffer)

    def reset(self, offset: int = 0, *, skip_first: bool = False) -> None:
        """Forget buffered bytes and continue at ``offset``.

        Args:
            offset: file offset of the next byte fed.
            skip_first: True to drop everything up to and including the next ``\\n``
                (used when starting in the middle of a line).
        """
        self._buffer.clear()
        self.offset = offset
        self._line_start = offset
        self._skipping = skip_first

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Add ``data`` and return the lines it completes.

        Args:
            data: the next bytes of the file, in order.

        Returns:
            ``(line, end_offset)`` pairs in file order: ``line`` without its ``\\n``,
            ``end_offset`` the file offset just after that ``\\n``.
        """
        out: list[tuple[bytes, int]] = []
        base = self.offset
        pos = 0
        size = len(data)
        while pos < size:
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._append(data[pos:])
                break
            end_offset = base + nl + 1
            self._append(data[pos:nl])
            if self._skipping:
                # The line being dropped (too long, or cut by the start position) ends here.
                self._skipping = False
            else:
                out.append((bytes(self._buffer), end_offset))
            self._buffer.clear()
            self._line_start = end_offset
            pos = nl + 1
        self.offset = base + size
        return out

    def flush(self) -> tuple[bytes, int] | None:
        """Return the buffered unterminated last line, if any, and clear it.

        Used when a file is read whole (replay): a final line without ``\\n`` still
        counts there.
        """
        if self._skipping or not self._buffer:
            self._buffer.clear()
            return None
        line = bytes(self._buffer)
        self._buffer.clear()
        self._line_start = self.offset
        return line, self.offset

    def _append(self, piece: bytes) -> None:
        if self._skipping:
            return
        if len(self._buffer) + len(piece) > self.max_line_bytes:
            self._buffer.clear()
            self._skipping = True
            if self._on_too_long is not None:
                self._on_too_long(self._line_start)
            return
        self._buffer += piece
