"""A row's TBinaryProtocol bytes, encoded once when the row is fixed.

osqueryd asks for the whole table every time its query runs (every 2 s with
the pack), and nearly every row is the same as the last time. So a row's
stable columns are encoded once, when it is first served, as a map of their
own, and kept (extension/enrich/arena.py). A reply that reads only stable
columns is those maps as they are; a reply with every column gives each row
a header that counts two entries more and the few bytes of the columns that
change (``state``, ``last_seen``), which are shared by every row with the
same values (:class:`GroupedRows`). tests/extension/test_wire_rows.py proves
the bytes are the ``thrift`` library's own TBinaryProtocol encoding of the
same rows.

Layout (Apache Thrift 0.25, lib/py/src/protocol/TBinaryProtocol.py; the
binary protocol specification,
https://github.com/apache/thrift/blob/master/doc/specs/thrift-binary-protocol.md):
a ``map<string, string>`` is the key type byte (11, STRING), the value
type byte (11), the entry count as a big-endian i32, then each key and value
as a big-endian i32 byte length and its UTF-8 bytes. osquery's table rows are such maps
(osquery/extensions/extensions.thrift, ``ExtensionPluginResponse``).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TType
from thrift.transport import TTransport

try:
    from thrift.protocol import fastbinary
except ImportError:  # thrift installed without its C extension
    fastbinary = None

__all__ = [
    "MAP_HEADER_BYTES",
    "STRING",
    "GroupedRows",
    "RowGroup",
    "Segment",
    "decode_rows",
    "encode_pairs",
    "map_header",
    "tail_bytes",
]

STRING: Final = 11
"""Thrift's type id of ``string`` (TType.STRING)."""
_MAP_HEADER = struct.Struct("!bbi")
_LENGTH = struct.Struct("!i")
_FIELD_HEADER = struct.Struct("!bh")
_LIST_HEADER = struct.Struct("!bi")


def map_header(entries: int) -> bytes:
    """The header of a ``map<string, string>`` with ``entries`` entries."""
    return _MAP_HEADER.pack(STRING, STRING, entries)


def encode_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Keys and values, each as an i32 length and UTF-8 bytes, in order.

    Raises:
        UnicodeEncodeError: a text holds a lone surrogate (thrift raises too).
    """
    pack = _LENGTH.pack
    out = bytearray()
    for key, value in pairs:
        data = key.encode("utf-8")
        out += pack(len(data))
        out += data
        data = value.encode("utf-8")
        out += pack(len(data))
        out += data
    return bytes(out)


def tail_bytes(state: str, last_seen: int) -> bytes:
    """The ``state`` and ``last_seen`` entries that end every row."""
    return encode_pairs((("state", state), ("last_seen", str(last_seen))))


MAP_HEADER_BYTES: Final = 6
"""Bytes of a map's header: key type, value type, i32 entry count."""

Segment = tuple[bytes, "array[int]", struct.Struct, list[int]]
"""Rows of one buffer of maps (extension/enrich/arena.py): the buffer, where each
of its maps ends, what cuts every map's entries out of it
(:meth:`extension.enrich.arena.Chunk.splitter`), and the rows' places in it, in
order."""

RowGroup = tuple[bytes, bytes, list[Segment]]
"""Rows that end alike: the map header they share (its count includes the two
tail entries), the ``state``/``last_seen`` bytes they end with, and their
stable maps, buffer by buffer."""


class GroupedRows:
    """Groups of rows that share their header and tail, as reply pieces.

    Iterating yields the encoded maps in pieces, each made only when the
    iterator reaches it, so that one piece at a time is held while a reply is
    sent: a group is its header; for each segment, its rows' entries (each
    map without its header, copied out of the buffer) joined with the tail and
    the header between them (and the same between segments); and the tail.
    Iterable more than once: a segment holds the buffer as it was when the
    reply was made, whatever the arena does meanwhile.

    A segment of all or most of its buffer's rows is cut in one call of the
    buffer's splitter (``struct.Struct.unpack_from``), and the few rows of
    another are sliced one by one. Both copy the entries as ``bytes``, which
    the cyclic garbage collector does not track: slices or memoryviews kept
    for them would be tracked, and tens of thousands of them made on each
    reply set off full collections of the whole process.
    """

    __slots__ = ("groups",)

    def __init__(self, groups: list[RowGroup]) -> None:
        self.groups = groups

    def __iter__(self) -> Iterator[bytes]:
        skip = MAP_HEADER_BYTES
        for head, tail, segments in self.groups:
            between = tail + head
            yield head
            for index, (data, ends, splitter, rows) in enumerate(segments):
                if index:
                    yield between
                if len(rows) == len(ends):  # the whole buffer
                    yield between.join(splitter.unpack_from(data))
                elif 2 * len(rows) > len(ends):  # most of it
                    yield between.join(map(splitter.unpack_from(data).__getitem__, rows))
                else:
                    yield between.join(
                        [data[(ends[i - 1] if i else 0) + skip : ends[i]] for i in rows]
                    )
            yield tail


class _Rows:
    """A struct with one field, ``1: list<map<string, string>> rows``, to decode into."""

    thrift_spec: Final = (
        None,
        (1, TType.LIST, "rows", (TType.MAP, (TType.STRING, "UTF8", TType.STRING, "UTF8", False),
                                 False), None),
    )  # fmt: skip

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] | None = None


def decode_rows(pieces: Sequence[bytes], count: int) -> list[dict[str, str]]:
    """The rows whose encoded maps, joined, are ``pieces`` (``count`` maps).

    Decoded by thrift itself: its C extension where built, else its
    pure-Python TBinaryProtocol.

    Raises:
        EOFError, thrift.transport.TTransport.TTransportException: the bytes
            hold fewer maps than ``count``.
    """
    data = b"".join((_FIELD_HEADER.pack(TType.LIST, 1), _LIST_HEADER.pack(TType.MAP, count),
                     *pieces, b"\x00"))  # fmt: skip
    protocol = TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(data))
    if fastbinary is not None:
        holder = _Rows()
        fastbinary.decode_binary(holder, protocol, [_Rows, _Rows.thrift_spec])
        return holder.rows or []
    protocol.readStructBegin()
    protocol.readFieldBegin()
    _, size = protocol.readListBegin()
    rows = []
    for _ in range(size):
        _, _, entries = protocol.readMapBegin()
        rows.append({protocol.readString(): protocol.readString() for _ in range(entries)})
    return rows
