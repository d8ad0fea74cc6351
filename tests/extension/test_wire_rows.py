"""Encoded rows are thrift's own TBinaryProtocol encoding of the reference rows.

The reference: each connection's row as ``TrackedConnection.row`` renders it
before it is first served, encoded by the ``thrift`` library (pure-Python
TBinaryProtocol) inside a ``call`` reply, as the generated
``Extension.Processor`` writes it; with ``stable_only``, the same rows without
``state`` and ``last_seen``.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osquery.extensions import Extension
from osquery.extensions.Extension import call_result
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport

from extension.enrich import arena
from extension.enrich.arena import ROWS_PER_CHUNK
from extension.enrich.connections import ConnectionTracker
from extension.enrich.wire import decode_rows
from extension.model import ProcessInfo, SocketRecord
from extension.serve.reply import EncodedRows, ReplyProcessor, _send_coalesced

STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "CLOSE_WAIT", "LISTEN", "")
texts = st.one_of(st.none(), st.text(max_size=40), st.text(min_size=250, max_size=300))


@st.composite
def records(draw: Any, inode: int) -> SocketRecord:
    v6 = draw(st.booleans())
    address = st.ip_addresses(v=6 if v6 else 4).map(str)
    protocol = draw(st.sampled_from((6, 17)))
    remote_port = draw(st.integers(0, 65535))
    return SocketRecord(
        pid=draw(st.one_of(st.none(), st.integers(1, 2**22))),
        family=10 if v6 else 2,
        protocol=protocol,
        local_address=draw(address),
        local_port=draw(st.integers(1, 65535)),
        remote_address=draw(address) if remote_port else "",
        remote_port=remote_port,
        state=draw(st.sampled_from(STATES)) if protocol == 6 else "",
        socket=inode,
        net_namespace=draw(st.one_of(st.none(), st.integers(1, 2**32))),
    )


processes = st.builds(
    ProcessInfo,
    name=texts,
    path=texts,
    cmdline=st.one_of(texts, st.text(min_size=4100, max_size=4200)),
    uid=st.one_of(st.none(), st.integers(0, 2**32)),
    username=texts,
    parent=st.one_of(st.none(), st.integers(0, 2**22)),
    parent_name=texts,
    parent_path=texts,
    start_time=st.one_of(st.none(), st.integers(0, 2**40)),
)


@st.composite
def samples(draw: Any) -> tuple[list[SocketRecord], list[ProcessInfo]]:
    count = draw(st.integers(0, 12))
    return (
        [draw(records(inode)) for inode in range(1, count + 1)],
        [draw(processes) for _ in range(count)],
    )


def thrift_reply(rows: list[dict[str, str]], seqid: int) -> bytes:
    """A ``call`` reply with ``rows``, written by thrift's pure-Python TBinaryProtocol."""
    buffer = TTransport.TMemoryBuffer()
    protocol = TBinaryProtocol.TBinaryProtocol(buffer)
    protocol.writeMessageBegin("call", TMessageType.REPLY, seqid)
    response = ExtensionResponse(status=ExtensionStatus(code=0, message="OK"), response=rows)
    call_result(success=response).write(protocol)
    protocol.writeMessageEnd()
    return bytes(buffer.getvalue())


def tracker_for(sample: list[SocketRecord], infos: list[ProcessInfo]) -> ConnectionTracker:
    by_pid = {r.pid: info for r, info in zip(sample, infos, strict=True)}
    return ConnectionTracker(lambda pid: by_pid.get(pid) or ProcessInfo(), attempt_grace_secs=0)


def served_in_arena(tracker: ConnectionTracker) -> list[Any]:
    """The tracker's served rows, in the arena's order, after checking that the
    arena holds exactly the served rows of the table and the rows waiting to be
    served are exactly the others."""
    held = list(tracker._arena.rows())
    table = list(tracker._connections.values())
    assert len({id(c) for c in held}) == len(held) == tracker._arena.count
    assert {id(c) for c in held} == {id(c) for c in table if c.served}
    assert {id(c) for c in tracker._pending} == {id(c) for c in table if not c.served}
    return held


def without_tail(row: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if k not in ("state", "last_seen")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(samples(), st.integers(0, 2**31 - 2), st.lists(st.sampled_from(STATES), min_size=12))
def test_reply_bytes_equal_thrift_encoding_of_the_reference_rows(
    sample: tuple[list[SocketRecord], list[ProcessInfo]], seqid: int, later: list[str]
) -> None:
    records_, infos = sample
    tracker = tracker_for(records_, infos)
    tracker.update(records_, now=1000.0)
    reference = [conn.row() for conn in tracker._connections.values()]

    encoded = EncodedRows(*tracker.encoded_rows(1000.0))
    served = served_in_arena(tracker)
    # Every row of the table is served, in the order it came.
    assert [id(c) for c in served] == [id(c) for c in tracker._connections.values()]
    assert encoded.reply(seqid) == thrift_reply(grouped(reference, tracker._sample_second), seqid)
    assert list(encoded) == grouped(reference, tracker._sample_second)
    stable = EncodedRows(*tracker.encoded_rows(1000.0, stable_only=True))
    assert stable.reply(seqid) == thrift_reply([without_tail(r) for r in reference], seqid)

    # States change and time passes: the stable columns stay as first served.
    changed = [
        replace(r, state=s) if r.protocol == 6 else r for r, s in zip(records_, later, strict=False)
    ]
    tracker.update(changed, now=1007.5)
    expected = []
    for row, conn in zip(reference, tracker._connections.values(), strict=True):
        expected.append({**without_tail(row), "state": conn.state, "last_seen": "1007"})
    again = EncodedRows(*tracker.encoded_rows(1007.5))
    in_reply = grouped(expected, tracker._sample_second)
    assert again.reply(seqid + 1) == thrift_reply(in_reply, seqid + 1)
    assert tracker.rows() == in_reply
    stable = EncodedRows(*tracker.encoded_rows(1007.5, stable_only=True))
    assert stable.reply(seqid) == thrift_reply([without_tail(r) for r in reference], seqid)

    saved = tracker.saved_rows()
    assert [s.row for s in saved] == [without_tail(row) for row in reference]


@st.composite
def churn(draw: Any) -> list[tuple[list[SocketRecord], bool]]:
    """Samples of a host whose sockets come and go: each sample keeps some of the
    sockets so far and opens new ones; each is followed by a reply or not."""
    pool = draw(st.lists(records(0), min_size=1, max_size=30))
    pool = [replace(r, socket=inode, pid=7) for inode, r in enumerate(pool, start=1)]
    steps = []
    for _ in range(draw(st.integers(1, 8))):
        listed = [r for r in pool if draw(st.booleans())]
        steps.append((listed, draw(st.booleans())))
    return steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(churn(), st.integers(1, 4))
def test_replies_follow_rows_that_come_and_go_across_chunks(
    steps: list[tuple[list[SocketRecord], bool]], per_chunk: int
) -> None:
    """Rows that close, linger and expire, rows first served later, chunks of a
    few rows rebuilt and gathered again: every reply holds exactly the table's
    served rows, each as first served, and both kinds of reply agree."""
    tracker = ConnectionTracker(lambda pid: ProcessInfo(name="web"), attempt_grace_secs=0,
                                linger_secs=4.0)  # fmt: skip
    first: dict[Any, dict[str, str]] = {}  # by row (kept alive: no id is reused)
    with patch.object(arena, "ROWS_PER_CHUNK", per_chunk):
        for step, (listed, query) in enumerate(steps):
            now = 1000.0 + 3 * step
            tracker.update(listed, now=now)
            if not query:
                continue
            full = EncodedRows(*tracker.encoded_rows(now))
            stable = EncodedRows(*tracker.encoded_rows(now, stable_only=True))
            served = served_in_arena(tracker)
            rows = [conn.row() for conn in served]
            for conn, row in zip(served, rows, strict=True):
                assert without_tail(row) == first.setdefault(conn, without_tail(row))
                if conn.closed_at is None and conn.sampled and conn.missed_at is None:
                    # An open row the last sample listed was seen at that sample.
                    row["last_seen"] = str(tracker._sample_second)
            assert stable.reply(step) == thrift_reply([without_tail(r) for r in rows], step)
            assert full.reply(step) == thrift_reply(grouped(rows, tracker._sample_second), step)
            chunks = [c for c in tracker._arena._chunks if c.size]
            assert all(c.size <= per_chunk for c in chunks)
            assert len(chunks) <= 2 * -(-len(served) // per_chunk) + 1


def web_sockets(count: int) -> list[SocketRecord]:
    """``count`` established sockets of one process, local ports 20000 and up."""
    return [
        SocketRecord(pid=7, family=2, protocol=6, local_address="10.0.0.5", local_port=20000 + i,
                     remote_address="203.0.113.9", remote_port=443, state="ESTABLISHED",
                     socket=5000 + i, net_namespace=1)
        for i in range(count)
    ]  # fmt: skip


def test_a_large_group_is_sent_in_pieces_of_whole_rows() -> None:
    count = 2 * ROWS_PER_CHUNK + 3
    listed = web_sockets(count)
    listed.append(replace(listed[0], local_port=80, remote_address="", remote_port=0,
                          state="LISTEN", socket=9000))  # fmt: skip
    tracker = ConnectionTracker(lambda pid: ProcessInfo(name="web"), attempt_grace_secs=0)
    tracker.update(listed, now=50.0)
    pieces, rows = tracker.encoded_rows(50.0)
    assert rows == count + 1
    decoded = decode_rows(list(pieces), rows)
    by_state: dict[str, list[int]] = {}
    for row in decoded:
        by_state.setdefault(row["state"], []).append(int(row["local_port"]))
    assert sorted(by_state["ESTABLISHED"]) == [20000 + i for i in range(count)]
    assert by_state["LISTEN"] == [80]
    assert {row["last_seen"] for row in decoded} == {"50"}
    # A group is its header, its rows' entries joined with the tail and the
    # header between them (one join per chunk, so at most ROWS_PER_CHUNK rows),
    # and its tail: with the header before it and the tail after it, each large
    # join decodes as whole rows, the rows of that chunk in that group.
    pieces = list(pieces)
    large = [piece for piece in pieces if len(piece) > 1000]
    head, tail = pieces[pieces.index(large[0]) - 1], pieces[pieces.index(large[-1]) + 1]
    sizes = []
    for chunk in tracker._arena.chunks():
        sizes.append(sum(1 for conn in chunk.rows if conn.state == "ESTABLISHED"))
    assert sum(sizes) == count and max(sizes) <= ROWS_PER_CHUNK
    for piece, n in zip(large, sizes, strict=True):
        part = decode_rows([head, piece, tail], n)
        assert {row["state"] for row in part} == {"ESTABLISHED"}


def test_rows_no_longer_listed_follow_the_listed_ones() -> None:
    listed = web_sockets(5)
    tracker = ConnectionTracker(lambda pid: ProcessInfo(name="web"), attempt_grace_secs=0)
    tracker.update(listed, now=50.0)
    tracker.encoded_rows(50.0)  # every row shown
    tracker.update(listed[1:], now=53.0)  # the first one closed: it lingers
    pieces, count = tracker.encoded_rows(53.0)
    rows = decode_rows(list(pieces), count)
    assert [(row["local_port"], row["last_seen"]) for row in rows] == [
        *((str(20000 + i), "53") for i in range(1, 5)),
        ("20000", "50"),
    ]
    assert EncodedRows(pieces, count).reply(9) == thrift_reply(rows, 9)


def test_a_stable_only_reply_is_the_kept_bytes_until_rows_change() -> None:
    listed = web_sockets(600)
    tracker = ConnectionTracker(lambda pid: ProcessInfo(name="web"), attempt_grace_secs=0)
    tracker.update(listed, now=50.0)
    pieces, count = tracker.encoded_rows(50.0, stable_only=True)
    first = list(pieces)
    assert count == 600
    tracker.update(listed, now=52.0)  # nothing came or went
    again, _ = tracker.encoded_rows(52.0, stable_only=True)
    assert [id(p) for p in again] == [id(p) for p in first]  # the same buffers
    gone = next(c for c in tracker._connections.values() if c.record.local_port == 20599)
    assert gone.arena_chunk is not None
    where = tracker._arena._chunks.index(gone.arena_chunk)
    tracker.update(listed[:-1], now=54.0)
    tracker.update(listed[:-1], now=56.0)  # the last one closed two samples ago
    tracker.update(listed[:-1], now=70.0)  # ... and no longer lingers
    later, count = tracker.encoded_rows(70.0, stable_only=True)
    assert count == 599
    # Only the chunk that held it was joined again.
    assert [id(p) == id(f) for p, f in zip(later, first, strict=True)] == [
        i != where for i in range(len(first))
    ]
    rows = decode_rows(list(later), count)
    assert sorted(int(r["local_port"]) for r in rows) == [20000 + i for i in range(599)]
    assert all("state" not in r and "last_seen" not in r for r in rows)


def grouped(rows: list[dict[str, str]], listed_at: int) -> list[dict[str, str]]:
    """``rows`` in the order a reply holds them: grouped by (state, last_seen, number
    of columns); the groups last seen at the last sample (``listed_at``) first;
    groups in the order of their first row, and the given order within a group."""
    groups: dict[tuple[str, str, int], list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault((row["state"], row["last_seen"], len(row)), []).append(row)
    order = sorted(groups, key=lambda key: key[1] != str(listed_at))  # a stable sort
    return [row for key in order for row in groups[key]]


class _Handler:
    def __init__(self, rows: Any) -> None:
        self.rows = rows

    def call(self, registry: str, item: str, request: dict[str, str]) -> ExtensionResponse:
        return ExtensionResponse(status=ExtensionStatus(code=0, message="OK"), response=self.rows)


def _serve_one(processor: Any, seqid: int) -> bytes:
    request = TTransport.TMemoryBuffer()
    client = Extension.Client(TBinaryProtocol.TBinaryProtocol(request))
    client._seqid = seqid
    client.send_call("table", "tracked_connections", {"action": "generate"})
    reply = TTransport.TMemoryBuffer()
    processor.process(
        TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(request.getvalue())),
        TBinaryProtocol.TBinaryProtocol(reply),
    )
    return bytes(reply.getvalue())


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(samples(), st.integers(0, 2**31 - 1))
def test_processor_writes_what_the_generated_processor_writes(
    sample: tuple[list[SocketRecord], list[ProcessInfo]], seqid: int
) -> None:
    tracker = tracker_for(*sample)
    tracker.update(sample[0], now=50.0)
    encoded = EncodedRows(*tracker.encoded_rows(50.0))
    ours = _serve_one(ReplyProcessor(_Handler(encoded)), seqid)
    stock = _serve_one(Extension.Processor(_Handler(list(encoded))), seqid)
    assert ours == stock
    client = Extension.Client(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(ours)))
    assert client.recv_call().response == list(encoded)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=400), st.integers(1, 6))
def test_coalesced_send_delivers_every_piece_in_order_through_partial_sends(
    some: list[bytes], times: int
) -> None:
    pieces = [*some * times, bytes(range(256)) * 400, *some]  # joined, and one alone
    left, right = socket.socketpair()
    with left, right:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        left.settimeout(10.0)  # sends may then stop part way, as the reader lags
        received = bytearray()

        def drain() -> None:
            while chunk := right.recv(1500):
                received.extend(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        _send_coalesced(left, pieces)
        left.shutdown(socket.SHUT_WR)
        reader.join()
    assert bytes(received) == b"".join(pieces)
