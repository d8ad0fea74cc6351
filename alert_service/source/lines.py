"""Split a byte stream into complete lines with a length cap."""

from __future__ import annotations

from collections.abc import Callable

from alert_service.source.longlines import StringCutter

__all__ = ["DEFAULT_MAX_LINE_BYTES", "LineSplitter", "Segment", "max_string_bytes_for"]

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
"""Default cap on one line, in bytes, without the newline (1 MiB)."""


def max_string_bytes_for(max_line_bytes: int) -> int:
    """Longest text kept in a line cut to fit ``max_line_bytes``: 1/16 of the line
    limit, between 64 bytes and 64 KiB (a cut line keeps up to 16 such texts whole)."""
    return max(64, min(64 * 1024, max_line_bytes // 16))


Segment = tuple[int, list[bytes]]
"""``(start_offset, lines)``: consecutive complete lines, the first starting at
``start_offset``; each line had a ``\\n`` after it."""


class LineSplitter:
    """Cut chunks of a file into complete ``\\n``-terminated lines.

    Only complete lines come out: bytes after the last ``\\n`` stay buffered until the
    rest of the line arrives (docs/design/following-logs.md, "Only complete lines"). A
    line longer than ``max_line_bytes`` (newline excluded) is not dropped: from the
    moment it is known to be too long, it goes through a
    :class:`~alert_service.source.longlines.StringCutter`, which cuts each of its JSON
    texts longer than :func:`max_string_bytes_for` (ending it in ``…[cut N
    bytes]``); the cut line comes out alone in its segment (its length is not its
    length in the file, so it is never followed by other lines in one segment) and
    ``on_cut`` is called. Only a line still longer than ``max_line_bytes`` after the
    cut is dropped, with ``on_too_long``. Memory stays bounded by about twice
    ``max_line_bytes``.

    Args:
        max_line_bytes: longest accepted line in bytes, newline excluded; at least 1.
        on_too_long: called with the file offset where a dropped line starts.
        offset: file offset of the first byte that will be fed.
        on_cut: called with the file offset where a cut line starts and its length in
            the file, bytes.

    Attributes:
        offset: file offset just after the last byte fed.
        consumed: file offset just after the last ``\\n`` seen: every line before it
            was handed out or skipped; a checkpoint may point here.

    Raises:
        ValueError: ``max_line_bytes`` is below 1.
    """

    __slots__ = (
        "_buffer",
        "_cutter",
        "_on_cut",
        "_on_too_long",
        "_skipping",
        "consumed",
        "max_line_bytes",
        "offset",
    )

    def __init__(
        self,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        on_too_long: Callable[[int], None] | None = None,
        offset: int = 0,
        on_cut: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self.offset = offset
        self.consumed = offset
        self._on_too_long = on_too_long
        self._on_cut = on_cut
        self._buffer = bytearray()
        self._skipping = False
        self._cutter: StringCutter | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of an unterminated line held in the buffer (or being cut)."""
        cutting = self._cutter.input_bytes if self._cutter is not None else 0
        return len(self._buffer) + cutting

    @property
    def skipping(self) -> bool:
        """True while the rest of a too-long (or cut) line is being dropped."""
        return self._skipping

    def reset(
        self, offset: int = 0, *, skip_first: bool = False, consumed: int | None = None
    ) -> None:
        """Forget buffered bytes and continue at ``offset``.

        Args:
            offset: file offset of the next byte fed.
            skip_first: True to drop everything up to and including the next ``\\n``
                (used when starting in the middle of a line).
            consumed: the value of :attr:`consumed` (default ``offset``); with
                ``skip_first``, the start of the line being skipped, so that a
                checkpoint never points inside a line.
        """
        self._buffer.clear()
        self._cutter = None
        self.offset = offset
        self.consumed = offset if consumed is None else consumed
        self._skipping = skip_first

    def feed_segments(self, data: bytes) -> list[Segment]:
        """Add ``data`` and return the lines it completes, grouped in segments.

        A new segment starts after each skipped line, so the lines of one segment are
        contiguous in the file.

        Args:
            data: the next bytes of the file, in order.

        Returns:
            Segments in file order (empty when ``data`` completes no line).
        """
        base = self.offset
        self.offset = base + len(data)
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if not pieces:  # no newline: the current line goes on
            self._append(tail)
            return []
        limit = self.max_line_bytes
        out: list[Segment] = []
        # The first piece ends the line that was already buffered (or skipped, or cut).
        first = pieces[0]
        line_start = self.consumed
        after_first = base + len(first) + 1
        seg_start, seg = after_first, []
        if self._skipping:
            self._skipping = False
        elif self._cutter is not None:
            self._cutter.feed(first)
            self._finish_cut(line_start, out)
        else:
            if self._buffer:
                self._buffer += first
                first = bytes(self._buffer)
                self._buffer.clear()
            if len(first) > limit:
                self._start_cut(first)
                self._finish_cut(line_start, out)
            else:
                seg_start, seg = line_start, [first]
        rest = pieces[1:]
        if rest:
            if max(map(len, rest)) <= limit:
                seg += rest  # the common case: no line too long
            else:
                pos = after_first
                for piece in rest:
                    if len(piece) > limit:
                        if seg:
                            out.append((seg_start, seg))
                        self._start_cut(piece)
                        self._finish_cut(pos, out)
                        seg_start, seg = pos + len(piece) + 1, []
                    else:
                        seg.append(piece)
                    pos += len(piece) + 1
        if seg:
            out.append((seg_start, seg))
        self.consumed = self.offset - len(tail)
        if tail:
            self._append(tail)
        return out

    def feed(self, data: bytes) -> list[tuple[bytes, int]]:
        """Add ``data`` and return the lines it completes with their end offsets.

        Args:
            data: the next bytes of the file, in order.

        Returns:
            ``(line, end_offset)`` pairs in file order: ``line`` without its ``\\n``,
            ``end_offset`` the file offset just after that ``\\n``.
        """
        out: list[tuple[bytes, int]] = []
        for start, lines in self.feed_segments(data):
            end = start
            for line in lines:
                end += len(line) + 1
                out.append((line, end))
        return out

    def flush(self) -> tuple[bytes, int] | None:
        """Return the buffered unterminated last line, if any, and clear it.

        Used when a file is finished (replay, or a rotated file whose last line never
        got its ``\\n``): that line still counts. The line is consumed: :attr:`consumed`
        moves to :attr:`offset`.

        Returns:
            ``(line, end_offset)``, or None when nothing (or only a skipped line's
            remainder) is buffered.
        """
        skipped = self._skipping
        line: bytes | None = bytes(self._buffer)
        self._buffer.clear()
        self._skipping = False
        start = self.consumed
        self.consumed = self.offset
        if self._cutter is not None:
            cut: list[Segment] = []
            self._finish_cut(start, cut)
            line = cut[0][1][0] if cut else None
        if skipped or not line:
            return None
        return line, self.offset

    def _append(self, piece: bytes) -> None:
        if self._skipping:
            return
        if self._cutter is None and len(self._buffer) + len(piece) <= self.max_line_bytes:
            self._buffer += piece
            return
        if self._cutter is None:
            self._start_cut(self._buffer)
            self._buffer.clear()
        assert self._cutter is not None
        self._cutter.feed(piece)
        if self._cutter.overflowed:  # hopeless: report it now, drop the rest
            self._cutter = None
            self._skipping = True
            self._too_long(self.consumed)

    def _start_cut(self, head: bytes | bytearray) -> None:
        """Go on with the current line through a cutter, ``head`` being its start."""
        self._cutter = StringCutter(max_string_bytes_for(self.max_line_bytes), self.max_line_bytes)
        self._cutter.feed(head)

    def _finish_cut(self, line_offset: int, out: list[Segment]) -> None:
        """End the line being cut: append it alone to ``out``, or report it too long."""
        cutter = self._cutter
        assert cutter is not None
        self._cutter = None
        line = cutter.finish()
        if line is None:
            self._too_long(line_offset)
            return
        out.append((line_offset, [line]))
        if self._on_cut is not None:
            self._on_cut(line_offset, cutter.input_bytes)

    def _too_long(self, line_offset: int) -> None:
        if self._on_too_long is not None:
            self._on_too_long(line_offset)
