"""The row arena holds exactly the rows added and not removed, in the order they came.

The reference is a plain list of (row, map bytes). Random sequences of adds,
removals and reads, with chunks of a few rows, so that chunks fill, empty,
are rebuilt and gathered again.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from extension.enrich import arena
from extension.enrich.arena import Chunk, RowArena
from extension.enrich.wire import decode_rows, encode_pairs, map_header


class Row:
    """A row as the arena sees it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.arena_chunk: Chunk | None = None


def encoded(number: int, entries: int) -> bytes:
    """A map of ``entries`` entries whose values name the row."""
    pairs = [(f"c{i}", f"{number}:{i}" * (number % 5)) for i in range(entries)]
    return map_header(entries) + encode_pairs(pairs)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 30)),
        st.tuples(st.just("remove"), st.integers(0, 200)),
        st.tuples(st.just("read"), st.integers(0, 200)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 5))
def test_the_arena_holds_what_was_added_and_not_removed_in_order(
    ops: list[tuple[str, int]], per_chunk: int
) -> None:
    held = RowArena()
    reference: list[tuple[Row, bytes]] = []
    made = 0
    with patch.object(arena, "ROWS_PER_CHUNK", per_chunk):
        for op, number in ops:
            if op == "add":
                row, data = Row(made), encoded(made, number)
                made += 1
                held.add(row, data)
                reference.append((row, data))
            elif op == "remove" and reference:
                row, _ = reference.pop(number % len(reference))
                held.remove(row)
                assert row.arena_chunk is None
                held.remove(row)  # a second time: nothing
            elif op == "read":
                pieces = held.pieces()
                assert b"".join(pieces) == b"".join(data for _, data in reference)
                assert [row for row in held.rows()] == [row for row, _ in reference]
                chunks = [c for c in held._chunks if c.size]
                assert all(1 <= c.size <= per_chunk for c in chunks)
                assert len(chunks) <= 2 * -(-len(reference) // per_chunk) + 1
                for chunk in chunks:
                    start = 0
                    built = zip(chunk.rows, chunk.ends, chunk.entries, strict=True)
                    for row, end, entries in built:
                        data = dict(reference)[row]
                        assert chunk.data[start:end] == data
                        assert entries == int.from_bytes(data[2:6], "big")
                        start = end
            assert held.count == len(reference)
            for row, data in reference:
                assert row.arena_chunk is not None and row.arena_chunk.encoded(row) == data
            assert list(held.maps()) == reference
    assert decode_rows(held.pieces(), len(reference)) == [
        decode_rows([data], 1)[0] for _, data in reference
    ]


def test_a_row_is_added_once() -> None:
    held = RowArena()
    row: Any = Row(1)
    held.add(row, encoded(1, 3))
    try:
        held.add(row, encoded(1, 3))
    except ValueError as err:
        assert "already" in str(err)
    else:
        raise AssertionError("a second add was taken")
    assert held.count == 1


def test_rows_spread_thin_are_gathered_into_full_chunks_in_order() -> None:
    held = RowArena()
    rows = [Row(n) for n in range(50)]
    with patch.object(arena, "ROWS_PER_CHUNK", 4):
        for row in rows:
            held.add(row, encoded(row.number, 2))
        held.pieces()
        for row in rows:
            if row.number % 5:
                held.remove(row)
        pieces = held.pieces()  # 10 rows left in 10 chunks: gathered into 3
    assert [len(decode_rows([piece], 4 if i < 2 else 2)) for i, piece in enumerate(pieces)] == [
        4,
        4,
        2,
    ]
    assert [row.number for row in held.rows()] == list(range(0, 50, 5))
    assert b"".join(pieces) == b"".join(encoded(n, 2) for n in range(0, 50, 5))


def test_a_map_refused_by_a_build_leaves_the_chunk_as_it_was() -> None:
    held = RowArena()
    rows = [Row(n) for n in range(3)]
    too_big: Any = Row(99)
    with patch.object(arena, "ROWS_PER_CHUNK", 8):
        held.add(rows[0], encoded(0, 2))
        held.pieces()
        held.add(rows[1], encoded(1, 3))
        held.add(too_big, encoded(99, 300))
        held.add(rows[2], encoded(2, 1))
        for _ in range(2):
            try:
                held.pieces()
            except ValueError as err:
                assert "300 entries" in str(err)
            else:
                raise AssertionError("a map of 300 entries was joined")
        held.remove(too_big)
        pieces = held.pieces()
    assert b"".join(pieces) == b"".join(encoded(n, e) for n, e in ((0, 2), (1, 3), (2, 1)))
    assert list(held.rows()) == rows
    assert [row.arena_chunk.encoded(row) for row in rows if row.arena_chunk] == [
        encoded(0, 2),
        encoded(1, 3),
        encoded(2, 1),
    ]
