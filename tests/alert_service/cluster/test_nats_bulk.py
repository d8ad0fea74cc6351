"""The bulk protocol parser against nats-py's own parser (the reference), on the same
byte stream cut into arbitrary chunks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from alert_service.source.nats_bulk import (
    BulkParser,
    Delivered,
    bulk_client,
    header_value,
    status_of,
)


class Recorder:
    """The client handlers a parser calls, recording each call in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.calls.append(("msg", sid, bytes(subject), bytes(reply), headers, data))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, text: str) -> None:
        self.calls.append(("err", text))


tokens = st.text(alphabet="abcXYZ019._$>*-", min_size=1, max_size=12)
payload = st.binary(max_size=40) | st.sampled_from(
    [b"", b"MSG a 1 5\r\n", b"\r\n\r\n", b"HMSG x 2 r 3 4\r\n", b"PING\r\n"]
)
header_block = st.lists(
    st.tuples(st.sampled_from(["Content-Encoding", "X-A", "Nats-Pending"]), tokens),
    max_size=3,
).map(lambda kv: ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in kv) + "\r\n").encode())
status_block = st.sampled_from(
    [
        b"NATS/1.0 408 Request Timeout\r\n\r\n",
        b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n",
        b"NATS/1.0 409 Consumer Deleted\r\n\r\n",
        b"NATS/1.0 100 Idle Heartbeat\r\n\r\n",
    ]
)


@st.composite
def operation(draw: st.DrawFn) -> bytes:
    kinds = ["msg", "msg", "hmsg", "hmsg", "ping", "pong", "ok", "info", "err"]
    kind = draw(st.sampled_from(kinds))
    if kind in ("msg", "hmsg"):
        subject = draw(tokens).encode()
        sid = draw(st.integers(1, 4))
        reply = draw(st.none() | tokens)
        data = draw(payload)
        reply_part = f" {reply}" if reply else ""
        if kind == "msg":
            head = f"MSG {subject.decode()} {sid}{reply_part} {len(data)}\r\n".encode()
            return head + data + b"\r\n"
        headers = draw(header_block | status_block)
        total = len(headers) + len(data)
        head = f"HMSG {subject.decode()} {sid}{reply_part} {len(headers)} {total}\r\n".encode()
        return head + headers + data + b"\r\n"
    if kind == "ping":
        return b"PING\r\n"
    if kind == "pong":
        return b"PONG\r\n"
    if kind == "ok":
        return b"+OK\r\n"
    if kind == "info":
        return b"INFO " + json.dumps({"server_id": draw(tokens)}).encode() + b"\r\n"
    text = draw(st.sampled_from([b"Stale Connection", b"Permissions Violation"]))
    return b"-ERR '" + text + b"'\r\n"


def feed(parser: Parser, stream: bytes, cuts: list[int]) -> None:
    async def go() -> None:
        start = 0
        for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
            if cut >= start:
                await parser.parse(stream[start:cut])
                start = cut

    asyncio.run(go())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(operation(), max_size=25),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.sets(st.integers(1, 4)),
)
def test_the_bulk_parser_sees_what_nats_py_sees(
    ops: list[bytes], cuts: list[int], routed: set[int]
) -> None:
    stream = b"".join(ops)
    reference = Recorder()
    feed(Parser(reference), stream, [])

    bulk_nc = Recorder()
    bulk = BulkParser(bulk_nc)  # type: ignore[arg-type]
    sunk: list[Delivered] = []

    async def sink(msgs: list[Delivered]) -> None:
        assert msgs
        sunk.extend(msgs)

    for sid in routed:
        bulk.route(sid, sink)
    feed(bulk, stream, cuts)

    def normal(call: tuple[Any, ...]) -> tuple[Any, ...]:
        if call[0] == "err":  # nats-py keeps the quotes; only the text matters
            return ("err", call[1].strip("'"))
        return call

    expected_others = [normal(c) for c in reference.calls if c[0] != "msg" or c[1] not in routed]
    expected_routed = [
        (c[2], c[3], c[4], c[5]) for c in reference.calls if c[0] == "msg" and c[1] in routed
    ]
    assert [normal(c) for c in bulk_nc.calls] == expected_others
    assert sunk == expected_routed


def test_a_stream_that_is_not_the_protocol_is_an_error() -> None:
    with pytest.raises(ProtocolError):
        feed(BulkParser(Recorder()), b"HELLO\r\n", [])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        feed(BulkParser(Recorder()), b"MSG a\r\n", [])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        feed(BulkParser(Recorder()), b"X" * 5000, [])  # type: ignore[arg-type]


def test_reset_forgets_a_partial_operation() -> None:
    nc = Recorder()
    parser = BulkParser(nc)  # type: ignore[arg-type]
    feed(parser, b"MSG a 1 10\r\n01234", [])
    parser.reset()
    feed(parser, b"PING\r\n", [])
    assert nc.calls == [("ping",)]


def test_bulk_client_has_the_bulk_parser() -> None:
    client, parser = bulk_client()
    assert client._ps is parser


def test_headers_and_statuses() -> None:
    raw = b"NATS/1.0\r\nX-A: 1\r\nContent-Encoding:  gzip \r\ncontent-encoding: zstd\r\n\r\n"
    assert header_value(raw, b"content-encoding") == "gzip"
    assert header_value(raw, b"x-b") is None
    assert status_of(raw) is None
    assert status_of(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n") == (
        "408",
        "Request Timeout",
    )
    assert status_of(b"NATS/1.0 409\r\n\r\n") == ("409", "")
