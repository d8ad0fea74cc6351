"""The ``nats`` source against the real NATS JetStream server on 127.0.0.1.

Messages are published the way Fleet's NATS log destination publishes them
(fleetdm/fleet server/logging/nats.go): one result line per message, the JSON as
the payload, on a subject from a template such as ``osquery.results.{host}``.
Each test uses its own stream and subjects and deletes the stream afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import zstandard
from nats.js.api import StreamConfig

from alert_service.config import Config, build_config
from alert_service.errors import ConfigError
from alert_service.pipeline import Pipeline
from alert_service.source.nats import NatsSources, stream_incarnation
from alert_service.state import open_state
from alert_service.state.checkpoints import load_checkpoints
from alert_service.state.record import decode_record
from alert_service.stats import Stats
from tests.helpers.services import need_nats, unique_name

IOC = "198.51.100.7"


def result_line(
    host: str, remote: str, port: int, *, counter: int = 3, local: int = 40000
) -> bytes:
    """One Fleet result-log line (event format, decorations with the host's uuid)."""
    doc = {
        "name": "pack/Global/tracked_connections",
        "hostIdentifier": host,
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709,
        "epoch": 0,
        "counter": counter,
        "numerics": False,
        "decorations": {"host_uuid": f"uuid-{host}", "hostname": host},
        "columns": {
            "local_port": str(local),
            "name": "curl",
            "pid": "812",
            "remote_address": remote,
            "remote_port": str(port),
        },
        "action": "added",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Stream:
    """A stream of this test on the real server, with a publisher."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = unique_name("TC").upper()
        self.prefix = unique_name("tc.results").replace("_", "")
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(nats.connect(url))
        self.js = self.client.jetstream()
        self.loop.run_until_complete(
            self.js.add_stream(StreamConfig(name=self.name, subjects=[f"{self.prefix}.>"]))
        )

    def publish(self, host: str, payload: bytes, headers: dict[str, str] | None = None) -> int:
        ack = self.loop.run_until_complete(
            self.js.publish(f"{self.prefix}.{host}", payload, headers=headers)
        )
        return int(ack.seq)

    def recreate(self) -> None:
        """Delete the stream and create it again (same name and subjects): its
        sequences start again at 1."""
        self.loop.run_until_complete(self.js.delete_stream(self.name))
        self.loop.run_until_complete(
            self.js.add_stream(StreamConfig(name=self.name, subjects=[f"{self.prefix}.>"]))
        )

    def consumer(self, durable: str) -> Any:
        return self.loop.run_until_complete(self.js.consumer_info(self.name, durable))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.js.delete_stream(self.name))
        finally:
            self.loop.run_until_complete(self.client.close())
            self.loop.close()


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream(need_nats())
    yield s
    s.close()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    yield conn
    conn.close()


def make_config(tmp_path: Path, stream: Stream, **nats_options: Any) -> Config:
    doc: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "sources": [
            {
                "nats": {
                    "servers": [stream.url],
                    "stream": stream.name,
                    "subject": f"{stream.prefix}.>",
                    "durable": "alerts",
                    **nats_options,
                },
                "poll_interval_secs": 0.05,
            }
        ],
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "known_packs": ["tracked_connections"],
        "rules": [
            {
                "name": "ioc",
                "notify": ["local"],
                "remote_address": {"include": ["198.51.100.0/24"]},
            },
        ],
    }
    return build_config(doc, "test.yaml", environ={})


def stream_sources(pipeline: Pipeline) -> NatsSources:
    """The pipeline's stream source set (to take a batch without committing it)."""
    return next(s for s in pipeline._sources if isinstance(s, NatsSources))


def outbox(state: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = state.execute("SELECT payload FROM outbox ORDER BY rowid").fetchall()
    return [decode_record(row[0]).as_alert().as_dict() for row in rows]


def drain(pipeline: Pipeline, stats: Stats, messages: int, polls: int = 200) -> None:
    """Poll until ``messages`` were received (and their batches committed)."""
    for _ in range(polls):
        pipeline.poll_once()
        if stats.messages_received >= messages:
            pipeline.poll_once()  # nothing more: one empty fetch
            return
    raise AssertionError(f"received {stats.messages_received} of {messages} messages")


def test_fleet_messages_become_outbox_rows_and_are_acked_after_commit(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    hosts = [f"host-{i:03d}" for i in range(20)]
    last = 0
    for n in range(3):
        for host in hosts:
            remote = IOC if n == 1 else "203.0.113.5"
            last = stream.publish(host, result_line(host, remote, 443, local=40000 + n))
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream, batch_size=16), stats=stats, state=state)
    try:
        drain(pipeline, stats, 60)
        pending = dict(stats.source_pending_messages)
    finally:
        pipeline.close()
    alerts = outbox(state)
    assert sorted(a["host"] for a in alerts) == hosts  # one IOC alert per host
    assert {a["connection"]["remote_address"] for a in alerts} == {IOC}
    assert stats.messages_received == 60
    assert stats.lines_read == 60
    assert stats.parse_errors == 0
    checkpoint = load_checkpoints(state)[f"nats:{stream.name}/alerts"]
    assert checkpoint.position.offset == last
    info = stream.consumer("alerts")
    assert info.ack_floor.stream_seq == last  # every batch acknowledged
    assert info.num_ack_pending == 0
    assert info.config.max_ack_pending == 32  # a batch, and one fetched ahead
    assert pending == {f"nats:{stream.name}/alerts": 0}  # the consumer lag


def test_compressed_payloads_are_read_and_undecodable_ones_counted_and_acked(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    plain = result_line("h1", IOC, 443, local=1)
    stream.publish("h1", plain)
    stream.publish("h2", gzip.compress(result_line("h2", IOC, 443, local=2)),
                   {"Content-Encoding": "gzip"})
    stream.publish("h3", zstandard.ZstdCompressor().compress(result_line("h3", IOC, 443, local=3)),
                   {"Content-Encoding": "zstd"})
    stream.publish("h4", b"\x1f\x8b not gzip at all", {"Content-Encoding": "gzip"})
    stream.publish("h5", result_line("h5", IOC, 443), {"Content-Encoding": "br"})
    stream.publish("h6", b"{not json")
    # two lines in one message (a publisher batching lines) are two lines
    last = stream.publish(
        "h7", result_line("h7", IOC, 443, local=7) + b"\n" + result_line("h7", IOC, 443, local=8)
    )
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream), stats=stats, state=state)
    try:
        drain(pipeline, stats, 7)
    finally:
        pipeline.close()
    alerts = outbox(state)
    assert sorted((a["host"], a["connection"]["local_port"]) for a in alerts) == [
        ("h1", 1), ("h2", 2), ("h3", 3), ("h7", 7), ("h7", 8),
    ]
    assert stats.messages_undecodable == 2  # corrupt gzip, unknown encoding
    assert stats.parse_errors == 1  # {not json
    info = stream.consumer("alerts")
    assert info.ack_floor.stream_seq == last  # the bad ones are acknowledged too
    assert info.num_ack_pending == 0


def logged_events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [dict(getattr(r, "alert_fields", {})) for r in caplog.records if r.getMessage() == name]


def test_a_garbled_message_is_logged_with_its_subject_stream_and_sequence(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding: a bad message was logged with the file source's fields: path was
    # the consumer's filter subject, inode 0, offset the stream sequence; the message's
    # own subject (which host published it) was nowhere.
    stream.publish("h1", result_line("h1", IOC, 443))
    bad = stream.publish("h\u202e2", b"{not json")  # a subject is publisher-chosen text
    long_host = "x" * 400
    long_bad = stream.publish(long_host, b"garbled")
    undecodable = stream.publish("h\u202e3", b"\x1f\x8b no", {"Content-Encoding": "gzip"})
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream), stats=stats, state=state)
    try:
        with caplog.at_level(logging.INFO, logger="alert_service"):
            drain(pipeline, stats, 4)
    finally:
        pipeline.close()
    assert stats.parse_errors == 2
    first, second = logged_events(caplog, "line_parse_failed")
    assert {k: first[k] for k in ("subject", "stream", "stream_sequence", "partition")} == {
        "subject": f"{stream.prefix}.h\\u202E2",  # escaped: visible, cannot reorder text
        "stream": stream.name,
        "stream_sequence": bad,
        "partition": "",
    }
    assert not {"path", "inode", "offset"} & first.keys()
    assert second["stream_sequence"] == long_bad
    assert second["subject"].startswith(f"{stream.prefix}.xxx")
    assert len(second["subject"]) <= 200 < len(stream.prefix) + 1 + len(long_host)
    (gone,) = logged_events(caplog, "message_undecodable")
    assert gone["subject"] == f"{stream.prefix}.h\\u202E3"
    assert gone["stream_sequence"] == undecodable


@pytest.mark.parametrize("narrowed", [False, True])
def test_stream_subjects_no_partition_reads_are_reported_when_binding(
    tmp_path: Path,
    stream: Stream,
    state: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
    narrowed: bool,
) -> None:
    # Review finding: a message on a subject of the stream that no partition's filter
    # matches (a publisher computing the token with the wrong case: Fleet's host_uuid
    # is upper-case) was stored and never read, with 0 pending and nothing logged.
    filters = [f"{stream.prefix}.a.*", f"{stream.prefix}.b.*"]
    if narrowed:  # the stream accepts exactly what the partitions read
        stream.loop.run_until_complete(
            stream.js.update_stream(StreamConfig(name=stream.name, subjects=filters))
        )
    stream.publish("a.h1", result_line("h1", IOC, 443))
    garbled = stream.publish("b.h3", b"{not json")
    if not narrowed:
        stream.publish("A.h2", result_line("h2", IOC, 443))  # stored, read by no partition
    stats = Stats()
    config = make_config(
        tmp_path, stream, subject=f"{stream.prefix}.{{partition}}.*", partitions=["a", "b"]
    )
    pipeline = Pipeline(config, stats=stats, state=state)
    try:
        with caplog.at_level(logging.INFO, logger="alert_service"):
            drain(pipeline, stats, 2)
            problems = dict(stats.source_problems)
    finally:
        pipeline.close()
    assert [a["host"] for a in outbox(state)] == ["h1"]
    (failed,) = logged_events(caplog, "line_parse_failed")
    assert (failed["subject"], failed["stream_sequence"], failed["partition"]) == (
        f"{stream.prefix}.b.h3", garbled, "b"
    )
    name = f"nats:{stream.name}/alerts"
    unread = logged_events(caplog, "nats_subjects_unread")
    if narrowed:
        assert unread == []
        assert problems == {}
        return
    (event,) = unread  # once, not once per partition
    assert event["source"] == name
    assert event["stream"] == stream.name
    assert event["subjects"] == [f"{stream.prefix}.>"]
    assert event["partition_subject"] == f"{stream.prefix}.{{partition}}.*"
    assert f"{stream.prefix}.>" in problems[name]


def test_messages_redelivered_after_a_lost_ack_make_no_second_alert(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    """The crash window: the batch is committed, the process dies before its ack."""
    for i in range(10):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443))
    config = make_config(tmp_path, stream, ack_wait_secs=1)
    first = Pipeline(config, stats=Stats(), state=state)
    sources = stream_sources(first)
    batch = next(iter(sources.poll()))
    first._commit(state, batch)  # stored, but never acknowledged:
    sources.close()  # the connection goes away like a killed process's
    assert len(outbox(state)) == 10
    info = stream.consumer("alerts")
    assert info.ack_floor.stream_seq == 0
    assert info.num_ack_pending == 10

    stats = Stats()
    second = Pipeline(config, stats=stats, state=state)
    try:
        for _ in range(20):
            second.poll_once()
    finally:
        second.close()
    # The consumer starts again after the stored checkpoint: the committed messages
    # are not read again, whether redelivered or not.
    assert stats.lines_read == 0
    assert len(outbox(state)) == 10
    info = stream.consumer("alerts")
    assert info.config.opt_start_seq == 11
    assert info.num_ack_pending == 0 and info.num_pending == 0


def test_a_failed_commit_gets_the_batch_delivered_again(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    for i in range(5):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443))
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream), stats=stats, state=state)
    state.execute("BEGIN IMMEDIATE")  # another writer holds the database: commits fail
    other = sqlite3.connect(tmp_path / "state" / "state.sqlite3", timeout=0.05)
    try:
        sources = stream_sources(pipeline)
        batch = next(iter(sources.poll()))
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("DELETE FROM checkpoints")
            raise AssertionError("the lock should be held")
        except sqlite3.OperationalError as err:
            sources.failed(batch, err)
        state.execute("ROLLBACK")
        info = stream.consumer("alerts")
        assert info.ack_floor.stream_seq == 0
        for _ in range(100):  # the batch comes back after the pause (1 s)
            time.sleep(min(pipeline.poll_once(), 0.1))
            if len(outbox(state)) == 5:
                break
    finally:
        other.close()
        pipeline.close()
    assert sorted(a["host"] for a in outbox(state)) == [f"h{i}" for i in range(5)]
    assert stream.consumer("alerts").ack_floor.stream_seq == 5


def test_a_stream_created_again_is_read_from_its_start(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    """The checkpoint of the deleted stream (sequence 6) is ignored: the new stream's
    sequences start at 1, and its first messages must not be skipped."""
    for i in range(6):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443, local=i))
    config = make_config(tmp_path, stream)
    stats = Stats()
    first = Pipeline(config, stats=stats, state=state)
    try:
        drain(first, stats, 6)
    finally:
        first.close()
    key = f"nats:{stream.name}/alerts"
    old = load_checkpoints(state)[key].position
    assert old.offset == 6
    assert old.fingerprint  # the stream's creation time, to recognise another one

    stream.recreate()
    for i in range(3):
        stream.publish(f"n{i}", result_line(f"n{i}", IOC, 443, local=100 + i))
    stats = Stats()
    second = Pipeline(config, stats=stats, state=state)
    try:
        drain(second, stats, 3)
    finally:
        second.close()
    assert sorted(a["host"] for a in outbox(state) if a["host"].startswith("n")) == [
        "n0", "n1", "n2",
    ]  # fmt: skip
    new = load_checkpoints(state)[key].position
    assert new.offset == 3
    assert new.fingerprint and new.fingerprint != old.fingerprint


def test_a_checkpoint_beyond_the_stream_s_last_message_is_of_another_stream(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    """Without a stored creation time (a checkpoint of an earlier version), a stored
    sequence above the stream's last one still shows a new stream: a stream's last
    sequence never goes down (limits and purges drop messages, not sequences)."""
    for i in range(6):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443, local=i))
    config = make_config(tmp_path, stream)
    stats = Stats()
    first = Pipeline(config, stats=stats, state=state)
    try:
        drain(first, stats, 6)
    finally:
        first.close()
    state.execute("UPDATE checkpoints SET fingerprint = X'', fingerprint_bytes = 0")
    stream.recreate()
    for i in range(3):
        stream.publish(f"n{i}", result_line(f"n{i}", IOC, 443, local=100 + i))
    stats = Stats()
    second = Pipeline(config, stats=stats, state=state)
    try:
        drain(second, stats, 3)
    finally:
        second.close()
    assert sorted(a["host"] for a in outbox(state) if a["host"].startswith("n")) == [
        "n0", "n1", "n2",
    ]  # fmt: skip
    assert load_checkpoints(state)[f"nats:{stream.name}/alerts"].position.offset == 3


def test_the_stream_creation_time_is_one_text_whatever_nats_py_gives() -> None:
    # The server's JSON has nanoseconds; nats-py 2.16 gives a datetime (microseconds).
    server = "2026-12-05T21:42:00.296611234Z"
    parsed = datetime.datetime(2026, 12, 5, 21, 42, 0, 296611, tzinfo=datetime.UTC)
    assert stream_incarnation(parsed) == b"2026-12-05T21:42:00.296611+00:00"
    assert stream_incarnation(server) == stream_incarnation(parsed)
    assert stream_incarnation(parsed.replace(tzinfo=None)) == stream_incarnation(parsed)
    later = parsed + datetime.timedelta(microseconds=1)
    assert stream_incarnation(later) != stream_incarnation(parsed)
    assert stream_incarnation(None) == b""
    assert stream_incarnation("not a time") == b"not a time"


def test_a_checkpoint_without_the_stream_creation_time_is_kept(
    tmp_path: Path, stream: Stream, state: sqlite3.Connection
) -> None:
    """A checkpoint stored without the creation time (an empty fingerprint: how the
    service stored them while it could not read the time nats-py gives as a datetime)
    says nothing about the stream's incarnation: it is used, not read anew."""
    for i in range(4):
        stream.publish(f"h{i}", result_line(f"h{i}", IOC, 443, local=i))
    config = make_config(tmp_path, stream)
    stats = Stats()
    first = Pipeline(config, stats=stats, state=state)
    try:
        drain(first, stats, 4)
    finally:
        first.close()
    state.execute("UPDATE checkpoints SET fingerprint = X'', fingerprint_bytes = 0")
    stream.publish("late", result_line("late", IOC, 443, local=50))
    stats = Stats()
    second = Pipeline(config, stats=stats, state=state)
    try:
        drain(second, stats, 1)
    finally:
        second.close()
    assert stats.lines_read == 1  # only the new message
    assert len(outbox(state)) == 5
    stored = load_checkpoints(state)[f"nats:{stream.name}/alerts"].position
    assert (stored.offset, bool(stored.fingerprint)) == (5, True)


def test_a_nats_source_with_a_path_is_refused(tmp_path: Path) -> None:
    doc = {
        "sources": [{"path": "/var/log/x.log", "nats": {"stream": "S"}}, {"nats": {}}],
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"name": "r", "notify": ["local"], "remote_port": [1]}],
    }
    with pytest.raises(ConfigError) as err:
        build_config(doc, "test.yaml", environ={})
    text = str(err.value)
    assert "$.sources[0]: give exactly one of path, glob or nats" in text
    assert "$.sources[1].nats" in text and "stream" in text
