"""Shrink a JSON line that is too long by cutting its long texts, in one pass.

A result line longer than ``max_line_bytes`` is almost always one huge text: a process
whose ``argv[0]`` is 130,000 control characters logs a ``name`` of 520,000 characters
(osquery writes each such byte as the four characters ``\\xNN``; osquery
``osquery/sql/sql.cpp``, ``escapeNonPrintableBytes``), and in the batch form every row
of the query run shares that line. Dropping the line would hide that connection and
every other connection of the batch.

:class:`StringCutter` reads the line as a stream of bytes and copies it, except that
each JSON string longer than ``max_string_bytes`` keeps only its first bytes and ends
in ``…[cut N bytes]`` (N = bytes of the logged text left out). The cut never splits an
escape (``\\"``, ``\\\\``, ``\\u00e9``), a ``\\uD83D\\uDC0D`` surrogate pair or a UTF-8
sequence, so the result is the same JSON document with shorter texts. Memory stays bounded: at most
``max_output_bytes`` of output are kept; a line that is still too long after the cut
(a huge number of short texts) is reported as such and dropped by the caller.

The scanner only needs JSON's string syntax (RFC 8259, section 7): a string starts
and ends with an unescaped ``"``, and a backslash escapes the byte after it (``\\u``
is followed by four hex digits, none of them ``"`` or ``\\``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["StringCutter", "cut_marker_bytes"]

# Inside a string: runs of ordinary bytes and two-byte escapes, up to a closing quote
# or a lone backslash at the end of the data. Linear: the alternatives start with
# different bytes.
_STRING_BODY: Final = re.compile(rb'(?:[^"\\]+|\\.)*', re.S)
_HIGH_SURROGATE: Final = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}")
_ESCAPE_MAX: Final = 6  # \uXXXX


def cut_marker_bytes(left_out: int) -> bytes:
    """The marker ending a cut string (UTF-8, JSON-safe)."""
    return f"…[cut {left_out} bytes]".encode()


def _escape_start(text: bytes | bytearray, pos: int) -> bool:
    """True when the backslash at ``pos`` starts an escape (an even run of
    backslashes precedes it)."""
    first = pos
    while first > 0 and text[first - 1] == 0x5C:
        first -= 1
    return (pos - first) % 2 == 0


def _safe_cut(text: bytes | bytearray, cut: int) -> int:
    """The largest position <= ``cut`` that splits neither a UTF-8 sequence, nor an
    escape, nor a surrogate pair of escapes in the JSON string body ``text``."""
    while cut > 0 and 0x80 <= text[cut] <= 0xBF:  # a continuation byte
        cut -= 1
    last = text.rfind(b"\\", max(0, cut - _ESCAPE_MAX), cut)
    if last >= 0:
        start = last if _escape_start(text, last) else last - 1
        length = _ESCAPE_MAX if text[start + 1 : start + 2] == b"u" else 2
        if start + length > cut:
            cut = start
    # Do not keep the first half of a surrogate pair (\ud83d of \ud83d\udc0d).
    head = cut - _ESCAPE_MAX
    if head >= 0 and _HIGH_SURROGATE.fullmatch(text, head, cut) and _escape_start(text, head):
        cut = head
    return cut


class StringCutter:
    """Copy one JSON line with every string cut to ``max_string_bytes``.

    Feed the line's bytes in order with :meth:`feed` (no newline), then call
    :meth:`finish`.

    Args:
        max_string_bytes: most bytes of one string's logged text kept, >= 16.
        max_output_bytes: most bytes of output kept; beyond that the line is
            reported too long by :meth:`finish`.
    """

    __slots__ = (
        "_carry",
        "_in_string",
        "_max_out",
        "_max_string",
        "_out",
        "_overflow",
        "_string",
        "_string_bytes",
        "input_bytes",
        "strings_cut",
    )

    def __init__(self, max_string_bytes: int, max_output_bytes: int) -> None:
        self._max_string = max(16, max_string_bytes)
        self._max_out = max_output_bytes
        self._out = bytearray()
        self._string = bytearray()  # the kept start of the current string (bounded)
        self._string_bytes = 0  # bytes of the current string seen so far
        self._in_string = False
        self._carry = b""  # a backslash that ended the last data, inside a string
        self._overflow = False
        self.input_bytes = 0
        self.strings_cut = 0

    def feed(self, data: bytes | bytearray) -> None:
        """Add the next bytes of the line."""
        self.input_bytes += len(data)
        if self._carry:
            data = self._carry + bytes(data)
            self._carry = b""
        i, n = 0, len(data)
        while i < n:
            if not self._in_string:
                j = data.find(b'"', i)
                if j < 0:
                    self._emit(data[i:])
                    return
                self._emit(data[i : j + 1])
                self._in_string = True
                self._string.clear()
                self._string_bytes = 0
                i = j + 1
                continue
            match = _STRING_BODY.match(data, i)
            end = match.end() if match is not None else i
            self._add_to_string(data[i:end])
            if end >= n:
                return
            if data[end] == 0x5C:  # a lone backslash at the end: its escape goes on
                self._carry = bytes(data[end:])
                return
            self._close_string()  # data[end] is the closing quote
            i = end + 1

    @property
    def overflowed(self) -> bool:
        """The output already exceeds ``max_output_bytes``: the line cannot fit."""
        return self._overflow

    def finish(self) -> bytes | None:
        """Return the shrunk line, or None when it is still longer than
        ``max_output_bytes`` (or ends inside a string: not JSON either way)."""
        if self._in_string or self._carry:
            # Not valid JSON; close what is kept so the parser reports it.
            self._add_to_string(self._carry)
            self._carry = b""
            self._close_string()
        if self._overflow:
            return None
        return bytes(self._out)

    def _emit(self, piece: bytes | bytearray) -> None:
        if self._overflow:
            return
        if len(self._out) + len(piece) > self._max_out:
            self._overflow = True
            self._out.clear()
            return
        self._out += piece

    def _add_to_string(self, piece: bytes | bytearray) -> None:
        self._string_bytes += len(piece)
        room = self._max_string + _ESCAPE_MAX - len(self._string)
        if room > 0:
            self._string += piece[:room]

    def _close_string(self) -> None:
        body = self._string
        if self._string_bytes <= self._max_string:
            self._emit(body)
        else:
            cut = _safe_cut(body, self._max_string)
            self._emit(body[:cut])
            self._emit(cut_marker_bytes(self._string_bytes - cut))
            self.strings_cut += 1
        self._emit(b'"')
        self._in_string = False
        self._string.clear()
        self._string_bytes = 0
