"""The pull consumer driven by our own ``CONSUMER.MSG.NEXT`` requests, against the
real NATS JetStream server on 127.0.0.1: order, the status messages that end a
request (408, 409), and redelivery recognised by stream sequence."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig

from alert_service.pipeline import Pipeline
from alert_service.source.nats_batch import ack_fields
from alert_service.source.nats_bulk import bulk_client
from alert_service.source.nats_pull import ConsumerGoneError, PullConsumer, _request_again
from alert_service.state import open_state
from alert_service.stats import Stats
from tests.alert_service.cluster.test_nats_source import (
    IOC,
    Stream,
    make_config,
    outbox,
    result_line,
    stream_sources,
)
from tests.helpers.services import need_nats, unique_name


def on_stream(body: Callable[[Any, str, str], Awaitable[None]], **consumer: Any) -> None:
    """Run ``body(client, stream, subject prefix)`` with a fresh stream and a durable
    pull consumer ``c`` (AckAll, and ``consumer``'s settings by their JetStream API
    names), deleted afterwards."""
    url = need_nats()

    async def go() -> None:
        client, _ = bulk_client()
        await client.connect(url)
        js = client.jetstream()
        name = unique_name("TCPULL").upper()
        prefix = unique_name("tc.pull").replace("_", "")
        await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.>"]))
        try:
            # JetStream API CONSUMER.CREATE (nats-py's ConsumerConfig lacks max_batch)
            config = {"durable_name": "c", "ack_policy": "all", **consumer}
            reply = await client.request(
                f"$JS.API.CONSUMER.CREATE.{name}.c",
                json.dumps({"stream_name": name, "config": config}).encode(),
                timeout=5,
            )
            assert "error" not in json.loads(reply.data), reply.data
            await body(client, name, prefix)
        finally:
            await js.delete_stream(name)
            await client.close()

    asyncio.run(go())


def test_messages_come_in_stream_order_in_batches() -> None:
    async def body(client: Any, stream: str, prefix: str) -> None:
        for n in range(2500):
            await client.publish(f"{prefix}.h{n % 7}", json.dumps({"n": n}).encode())
        await client.flush()
        puller = PullConsumer(client, stream, "c", 1000, 5.0)
        await puller.start()
        got: list[int] = []
        sizes: list[int] = []
        while len(got) < 2500:
            msgs = await puller.take(2.0)
            assert msgs, "stalled"
            sizes.append(len(msgs))
            got += [json.loads(m[3])["n"] for m in msgs]
            assert [ack_fields(m[1])[0] for m in msgs] == [n + 1 for n in got[-len(msgs) :]]
            await client.request(msgs[-1][1].decode(), b"+ACK", timeout=5)
        await puller.stop()
        assert got == list(range(2500))
        # A take returns what has arrived once the first message has: a batch holds
        # at most the request's 1,000, and fewer when the server was still sending.
        assert all(0 < size <= 1000 for size in sizes), sizes

    on_stream(body, max_ack_pending=2000)


def test_an_expired_request_ends_with_408_and_is_sent_again() -> None:
    async def body(client: Any, stream: str, prefix: str) -> None:
        puller = PullConsumer(client, stream, "c", 10, 0.2)
        await puller.start()
        assert await puller.take(0.7) == []  # nothing published: requests expire
        assert puller.requests >= 3  # each 408 sent a new request
        await client.publish(f"{prefix}.h1", b"late")
        await client.flush()
        msgs = await puller.take(2.0)
        assert [m[3] for m in msgs] == [b"late"]
        await puller.stop()

    on_stream(body)


def test_a_deleted_consumer_ends_the_request_with_409_and_an_error() -> None:
    async def body(client: Any, stream: str, prefix: str) -> None:
        puller = PullConsumer(client, stream, "c", 10, 30.0)
        await puller.start()
        await client.jetstream().delete_consumer(stream, "c")
        with pytest.raises(ConsumerGoneError, match="409 Consumer Deleted"):
            for _ in range(50):
                await puller.take(0.1)
        await puller.stop()

    on_stream(body)


def test_a_request_over_the_consumers_batch_limit_is_an_error() -> None:
    async def body(client: Any, stream: str, prefix: str) -> None:
        puller = PullConsumer(client, stream, "c", 100, 5.0)
        await puller.start()
        with pytest.raises(ConsumerGoneError, match="409 Exceeded MaxRequestBatch"):
            for _ in range(50):
                await puller.take(0.1)
        await puller.stop()

    on_stream(body, max_batch=10)


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream(need_nats())
    yield s
    s.close()


def test_messages_redelivered_to_the_same_binding_are_skipped_by_sequence(
    tmp_path: Path, stream: Stream
) -> None:
    """The acknowledgement of a committed batch is lost while the consumer stays
    bound: the server delivers the batch again after ``ack_wait``; the reader
    recognises it by stream sequence, counts it, and no second alert is queued."""
    state = open_state(tmp_path / "state" / "state.sqlite3")
    for i in range(10):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443))
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream, ack_wait_secs=1), stats=stats, state=state)
    try:
        sources = stream_sources(pipeline)
        deadline = time.monotonic() + 20
        # The first take may hold only the messages that had arrived by then.
        while len(outbox(state)) < 10 and time.monotonic() < deadline:
            for batch in sources.poll():
                pipeline._commit(state, batch)  # stored; the acknowledgement never goes out
        assert len(outbox(state)) == 10
        while stats.messages_redelivered_skipped < 10 and time.monotonic() < deadline:
            pipeline.poll_once()
        assert stats.messages_redelivered_skipped == 10
        assert stats.lines_read == 10
        assert len(outbox(state)) == 10
        for _ in range(5):
            pipeline.poll_once()
        info = stream.consumer("alerts")
        assert info.ack_floor.stream_seq == 10  # the redelivered ones are acknowledged
        assert info.num_ack_pending == 0
    finally:
        pipeline.close()
        state.close()


def test_undecodable_messages_are_counted_once(tmp_path: Path, stream: Stream) -> None:
    state: sqlite3.Connection = open_state(tmp_path / "state" / "state.sqlite3")
    stream.publish("h1", b"\x00 not gzip", {"Content-Encoding": "gzip"})
    last = stream.publish("h2", result_line("h2", IOC, 443))
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream), stats=stats, state=state)
    try:
        deadline = time.monotonic() + 20
        while stats.messages_received < 2 and time.monotonic() < deadline:
            pipeline.poll_once()
        for _ in range(5):
            pipeline.poll_once()
    finally:
        pipeline.close()
    assert stats.messages_undecodable == 1
    assert [a["host"] for a in outbox(state)] == ["h2"]
    assert stream.consumer("alerts").ack_floor.stream_seq == last
    state.close()


@pytest.mark.parametrize(
    ("status", "description", "again"),
    [
        ("409", "Leadership Change", True),
        ("409", "Server Shutdown", True),
        ("409", "Exceeded MaxWaiting", True),
        ("409", "Consumer Deleted", False),
        ("409", "Exceeded MaxRequestBatch of 10", False),
        ("409", "Exceeded MaxAckPending", False),
        ("400", "Bad Request - invalid json", False),
        ("503", "No Responders", False),
    ],
)
def test_which_ended_requests_are_sent_again(status: str, description: str, again: bool) -> None:
    assert _request_again(status, description) is again


def test_a_client_without_the_bulk_parser_is_refused() -> None:
    puller = PullConsumer(NatsClient(), "S", "c", 10, 5.0)
    with pytest.raises(TypeError, match="bulk_client"):
        asyncio.run(puller.start())
