"""SELECT * replies (the grouping, the cached splitter) and the rows taken for saving,
against slices of the buffers and thrift's decoding, while the arena changes between
making a reply and sending it (again)."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extension.enrich import arena
from extension.enrich.arena import Chunk, RowArena
from extension.enrich.connections import ConnectionTracker
from extension.enrich.wire import MAP_HEADER_BYTES, GroupedRows, decode_rows
from extension.model import ProcessInfo, SocketRecord
from tests.extension.test_wire_rows import grouped, records


class Row:
    def __init__(self) -> None:
        self.arena_chunk: Chunk | None = None


def a_map(entries: int, body: bytes) -> bytes:
    return struct.pack("!bbi", 11, 11, entries) + body


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 255), st.binary(max_size=300)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 5),
)
def test_the_splitter_cuts_what_slices_cut_and_old_replies_keep_their_bytes(
    steps: list[tuple[bool, int, bytes]], per_chunk: int
) -> None:
    held = RowArena()
    rows: list[Row] = []
    made: list[tuple[GroupedRows, list[bytes]]] = []
    with patch.object(arena, "ROWS_PER_CHUNK", per_chunk):
        for remove, entries, body in steps:
            if remove and rows:
                held.remove(rows.pop(len(body) % len(rows)))
            else:
                row = Row()
                rows.append(row)
                held.add(row, a_map(entries, body))
            for chunk in held.chunks():
                data, ends = chunk.data, chunk.ends
                starts = [0, *ends[:-1]]
                sliced = [data[s + MAP_HEADER_BYTES : e] for s, e in zip(starts, ends, strict=True)]
                assert list(chunk.splitter().unpack_from(data)) == sliced
                assert chunk.splitter() is chunk.splitter()
            # Every way a segment is cut: whole, most, few, none; and again later.
            segments = []
            for chunk in held.chunks():
                n = len(chunk.rows)
                for places in (list(range(n)), list(range(0, n, 2)), list(range(1, n, 3)), [n - 1]):
                    segments.append((chunk.data, chunk.ends, chunk.splitter(), places))
            reply = GroupedRows([(b"H", b"T", segments)]) if segments else GroupedRows([])
            expected = []
            for data, ends, _, places in segments:
                starts = [0, *ends[:-1]]
                expected.append(b"TH".join(data[starts[i] + MAP_HEADER_BYTES : ends[i]]
                                           for i in places))  # fmt: skip
            if segments:
                assert b"".join(reply) == b"H" + b"TH".join(expected) + b"T"
            made.append((reply, list(reply)))
            for old, pieces in made:
                assert list(old) == pieces, "a reply made earlier changed"


def lookup(pid: int | None) -> ProcessInfo:
    return ProcessInfo(name="web", cmdline="x" * (pid or 0))


@st.composite
def hosts(draw: Any) -> list[tuple[list[SocketRecord], bool, int]]:
    pool = draw(st.lists(records(0), min_size=1, max_size=24))
    # Few pids and states: most chunks are all alike (one group each).
    pool = [replace(r, socket=inode, pid=draw(st.sampled_from((7, 7, 7, 9, None))),
                    state=draw(st.sampled_from(("ESTABLISHED", "ESTABLISHED", "CLOSE_WAIT")))
                    if r.protocol == 6 else "")
            for inode, r in enumerate(pool, start=1)]  # fmt: skip
    steps = []
    for _ in range(draw(st.integers(1, 10))):
        listed = [r for r in pool if draw(st.integers(0, 5))]
        steps.append((listed, draw(st.booleans()), draw(st.integers(0, 3))))
    return steps


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow])  # fmt: skip
@given(hosts(), st.integers(1, 4))
def test_replies_and_saved_rows_stay_as_made_while_rows_come_go_and_chunks_rebuild(
    steps: list[tuple[list[SocketRecord], bool, int]], per_chunk: int
) -> None:
    tracker = ConnectionTracker(lookup, attempt_grace_secs=0, linger_secs=4.0)
    made: list[tuple[Any, bytes, list[dict[str, str]], int]] = []
    taken: list[tuple[Any, list[Any]]] = []
    with patch.object(arena, "ROWS_PER_CHUNK", per_chunk):
        for step, (listed, query, late) in enumerate(steps):
            now = 1000.0 + 4 * step + late
            tracker.update(listed, now=now)
            if not query:
                continue
            pieces, count = tracker.encoded_rows(now)
            served = list(tracker._arena.rows())
            expected = []
            for conn in served:
                row = conn.row()
                if conn.closed_at is None and conn.sampled and conn.missed_at is None:
                    row["last_seen"] = str(tracker._sample_second)
                expected.append(row)
            expected = grouped(expected, tracker._sample_second)
            first = b"".join(pieces)
            assert decode_rows([first], count) == expected
            made.append((pieces, first, expected, count))
            taken.append((tracker.saved_rows_later(), tracker.saved_rows()))
            for old, data, rows, n in made:
                assert b"".join(old) == data and decode_rows(list(old), n) == rows
            for later, saved in taken:
                assert later() == saved


def test_a_chunk_of_rows_listed_again_unchanged_is_one_group_as_when_first_listed() -> None:
    # The collector hands back the very record of a socket that did not change,
    # and the tracker leaves such a row's last_seen as it was: the row is still
    # one the last sample listed, served with its last_seen, in one group.
    sockets = [
        SocketRecord(
            pid=7,
            family=2,
            protocol=6,
            local_address="10.0.0.5",
            local_port=20000 + i,
            remote_address="192.0.2.1",
            remote_port=443,
            state="ESTABLISHED",
            socket=i + 1,
            net_namespace=1,
        )
        for i in range(600)
    ]
    tracker = ConnectionTracker(lookup, attempt_grace_secs=0)
    for now in (1000.0, 1002.0, 1004.0):
        tracker.update(sockets, now=now)
        pieces, count = tracker.encoded_rows(now)
        assert isinstance(pieces, GroupedRows)
        ((_, _, segments),) = pieces.groups
        assert [len(places) for *_, places in segments] == [256, 256, 88], now
        rows = decode_rows(list(pieces), count)
        assert {r["last_seen"] for r in rows} == {str(int(now))}
