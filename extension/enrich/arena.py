"""The served rows' stable columns, encoded once and kept in a few large buffers.

osqueryd runs the pack's query every 2 s, and that query reads only columns
that never change during a connection's life (osquery sends the columns a
query reads as ``colsUsed`` in the ``generate`` request's context: osquery
5.x osquery/core/tables.cpp ``TablePlugin::setRequestFromContext``). For
such a query the reply is the same bytes as last time for every row that is
still there. So each row's stable columns are encoded once, when it is first
served, as a complete TBinaryProtocol ``map<string, string>`` (its header
counts the stable entries alone; extension/enrich/wire.py), and appended to
a *chunk*: a buffer of up to :data:`ROWS_PER_CHUNK` such maps joined.

- A chunk whose rows have not changed since its last build is sent as it
  is: a reply that reads only stable columns costs no work per row.
- A row that leaves the table is struck out of its chunk; a row first served
  joins the last chunk that has room. A chunk is joined again, in C, from
  stretches of its old buffer and the new rows' bytes, only when a reply
  needs it after such a change.
- The buffers are the only copy of the rows' bytes the tracker keeps. A reply
  that reads ``state`` or ``last_seen`` too (``SELECT *``) copies each row's
  entries out of them (:meth:`RowArena.chunks`; extension/enrich/wire.py
  ``GroupedRows``), with a map header that counts those two entries and the
  two entries after each row.

Rows are any objects with the attribute of :class:`Member`, compared by
identity; the arena sets it. Not thread-safe: the tracker's lock guards it.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from itertools import accumulate, chain, compress
from operator import sub
from typing import Any, Final, Protocol

from extension.enrich.wire import MAP_HEADER_BYTES

__all__ = ["ROWS_PER_CHUNK", "Chunk", "Held", "Member", "RowArena", "maps_of"]

ROWS_PER_CHUNK: Final = 256
"""Rows per chunk: about 170 KiB of typical rows, so a reply is sent in a few
dozen pieces and a change rebuilds a small part of it."""

_COUNT: Final = struct.Struct("!i")


class Member(Protocol):
    """A row the arena holds: where it is, kept on the row itself."""

    arena_chunk: Chunk | None
    """The chunk holding the row's bytes; None when it is in no chunk."""


class Chunk:
    """Up to :data:`ROWS_PER_CHUNK` encoded maps, joined.

    Attributes:
        data: the built rows' maps, joined (``b""`` before the first build).
        rows: the built rows, in ``data``'s order; None where a row has left.
        ends: where each built row's map ends in ``data``, bytes.
        entries: each built row's number of entries (stable columns: fewer
            than 256).
        fresh: rows added since the last build, with their maps.
        size: rows held (built and not left, and fresh).
        left: built rows that have left since the last build.
    """

    __slots__ = ("_splitter", "data", "ends", "entries", "fresh", "left", "rows", "size")

    def __init__(self) -> None:
        self._splitter: struct.Struct | None = None
        self.data = b""
        self.rows: list[Any] = []
        self.ends = array("L")
        self.entries = bytearray()
        self.fresh: list[tuple[Any, bytes]] = []
        self.size = 0
        self.left = 0

    def build(self) -> None:
        """Join the rows held into ``data`` again (a no-op when nothing changed).

        The rows that stay are copied in runs (one slice of the old buffer per
        stretch between rows that left), so the work per row is a few list
        operations done in C.

        Raises:
            ValueError: a fresh map counts 256 entries or more (the table has 27
                columns); the chunk is then left as it was.
        """
        if not self.left and not self.fresh:
            return
        rows, ends = self.rows, self.ends
        lengths = list(map(sub, ends, chain((0,), ends)))
        parts: list[bytes | memoryview] = []
        if self.left:
            keep = [row is not None for row in rows]
            view = memoryview(self.data)
            begin = 0
            for index in [i for i, kept in enumerate(keep) if not kept]:
                start = ends[index] - lengths[index]
                if start > begin:
                    parts.append(view[begin:start])
                begin = ends[index]
            if begin < len(self.data):
                parts.append(view[begin:])
            rows = list(compress(rows, keep))
            lengths = list(compress(lengths, keep))
            entries = bytearray(compress(self.entries, keep))
        else:
            parts.append(self.data)
            entries = self.entries
        built = len(rows)  # rows and entries may be this chunk's own lists
        for row, encoded in self.fresh:
            (count,) = _COUNT.unpack_from(encoded, 2)
            if count > 255:
                del rows[built:], entries[built:]  # as they were
                raise ValueError(f"a row of {count} entries")
            parts.append(encoded)
            rows.append(row)
            lengths.append(len(encoded))
            entries.append(count)
        self.data = b"".join(parts)
        del parts
        self.rows, self.entries = rows, entries
        self.ends = array("L", accumulate(lengths))
        self.fresh = []
        self.left = 0
        self._splitter = None

    def splitter(self) -> struct.Struct:
        """What cuts each built row's entries (its map without the header) out of
        ``data``, in order, in one call: ``splitter().unpack_from(data)``.

        A ``struct.Struct`` whose format skips each header and takes each row's
        entries (``6x<n>s`` per row): half the time of a slice per row. Made at
        the first call after a build and kept until the next one, about 32
        bytes per row; it fits this build's ``data`` alone.
        """
        splitter = self._splitter
        if splitter is None:
            ends, skip = self.ends, MAP_HEADER_BYTES
            lengths = tuple(map(sub, ends, map(skip.__add__, chain((0,), ends))))
            splitter = self._splitter = struct.Struct(f"{skip}x%ds" * len(lengths) % lengths)
        return splitter

    def encoded(self, row: Any) -> bytes:
        """The map of ``row``, which this chunk holds.

        Raises:
            KeyError: it does not.
        """
        for held, encoded in self.fresh:
            if held is row:
                return encoded
        try:
            index = self.rows.index(row)
        except ValueError:
            raise KeyError("the row is not in this chunk") from None
        return self.data[self.ends[index - 1] if index else 0 : self.ends[index]]


Held = tuple[bytes, "array[int]", list[Any]]
"""A chunk as it was: its buffer, where each map ends in it, and its rows."""


def maps_of(held: list[Held]) -> Iterator[tuple[Any, bytes]]:
    """Each row of ``held`` (:meth:`RowArena.held`) with its stable map, in order."""
    for data, ends, rows in held:
        start = 0
        for row, end in zip(rows, ends, strict=True):
            yield row, data[start:end]
            start = end


class RowArena:
    """Every served row's stable map, in chunks, in the order they were first served
    (rows that left make room that the next build closes up).

    Attributes:
        count: rows held.
    """

    def __init__(self) -> None:
        self._chunks: list[Chunk] = []
        self.count = 0

    def add(self, row: Member, encoded: bytes) -> None:
        """Hold ``row``, whose stable map is ``encoded``.

        Raises:
            ValueError: the row is held already.
        """
        if row.arena_chunk is not None:
            raise ValueError("the row is in the arena already")
        chunks = self._chunks
        chunk = chunks[-1] if chunks else None
        if chunk is None or chunk.size >= ROWS_PER_CHUNK:
            chunk = Chunk()
            chunks.append(chunk)
        chunk.fresh.append((row, encoded))
        chunk.size += 1
        row.arena_chunk = chunk
        self.count += 1
        if chunk.size == ROWS_PER_CHUNK:
            chunk.build()  # a full chunk holds no row's bytes apart

    def remove(self, row: Member) -> None:
        """Let go of ``row`` (a no-op when it is not held)."""
        chunk = row.arena_chunk
        if chunk is None:
            return
        fresh = chunk.fresh
        if fresh and any(held is row for held, _ in fresh):
            chunk.fresh = [item for item in fresh if item[0] is not row]
        else:
            chunk.rows[chunk.rows.index(row)] = None  # by identity: rows compare so
            chunk.left += 1
        chunk.size -= 1
        row.arena_chunk = None
        self.count -= 1

    def chunks(self) -> list[Chunk]:
        """The chunks, built, in order; empty ones dropped. When rows that left
        have spread the rows over more than twice the chunks they need, they are
        first gathered again into full chunks, in the same order."""
        chunks = [chunk for chunk in self._chunks if chunk.size]
        if len(chunks) > 2 * (-(-self.count // ROWS_PER_CHUNK)) + 1:
            chunks = self._regather(chunks)
        self._chunks = chunks
        for chunk in chunks:
            chunk.build()
        return chunks

    def pieces(self) -> list[bytes]:
        """Every held row's map, in order, in one buffer per chunk."""
        return [chunk.data for chunk in self.chunks()]

    def rows(self) -> Iterator[Any]:
        """The rows held, in order (building the chunks first)."""
        for chunk in self.chunks():
            yield from chunk.rows

    def held(self) -> list[Held]:
        """What :meth:`maps` reads, as it is now (building the chunks first): each
        chunk's buffer, where its maps end and a copy of its rows. Later changes
        to the arena leave it as it is, since a build makes a new buffer and new
        ends rather than changing them."""
        return [(chunk.data, chunk.ends, list(chunk.rows)) for chunk in self.chunks()]

    def maps(self) -> Iterator[tuple[Any, bytes]]:
        """Each row held with its stable map, in order (building the chunks first):
        for reading every row, where :meth:`Chunk.encoded` would look each one up."""
        return maps_of(self.held())

    @staticmethod
    def _regather(chunks: list[Chunk]) -> list[Chunk]:
        out: list[Chunk] = []
        chunk: Chunk | None = None
        for old in chunks:
            old.build()
        for row, encoded in maps_of([(old.data, old.ends, old.rows) for old in chunks]):
            if chunk is None or chunk.size >= ROWS_PER_CHUNK:
                chunk = Chunk()
                out.append(chunk)
            chunk.fresh.append((row, encoded))
            chunk.size += 1
            row.arena_chunk = chunk
        return out
