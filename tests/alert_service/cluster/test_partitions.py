"""Partitions of a stream source shared by instances through leases in PostgreSQL.

Two pipelines in this process are two instances: each its own NATS connection and
its own PostgreSQL connection to one state schema. Subjects carry the partition
token (``<prefix>.<token>.<host>``), as Fleet writes them with a subject template
that starts with a partition token (a ``partition(P, ...)`` mapping, or the first
character of the host's uuid).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import yaml
from psycopg import sql
from test_nats_source import IOC, Stream, result_line, stream_sources

from alert_service.config import Config, build_config
from alert_service.deliver import build_delivery_service
from alert_service.errors import ConfigError
from alert_service.pipeline import Pipeline
from alert_service.state.db import open_state
from alert_service.state.leases import LeaseLostError
from alert_service.state.postgres import PgTarget
from alert_service.stats import Stats
from tests.helpers.services import need_nats, need_postgresql, unique_name

PARTITIONS = ["0", "1", "2", "3"]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream(need_nats())
    yield s
    s.close()


@pytest.fixture
def pg_target() -> Iterator[PgTarget]:
    dsn = need_postgresql()
    target = PgTarget(dsn, unique_name("tc"))
    yield target
    with psycopg.connect(dsn, autocommit=True) as conn:
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        conn.execute(drop.format(sql.Identifier(target.schema)))


def make_config(stream: Stream, target: PgTarget, ttl: float = 3.0) -> Config:
    return build_config(make_doc(stream, target, ttl), "test.yaml", environ={"PG": target.dsn})


def make_doc(stream: Stream, target: PgTarget, ttl: float = 3.0) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "state": {"backend": "postgresql", "dsn": {"env": "PG"}, "schema": target.schema},
        "sources": [
            {
                "nats": {
                    "servers": [stream.url],
                    "stream": stream.name,
                    "subject": f"{stream.prefix}.{{partition}}.*",
                    "durable": "alerts",
                    "partitions": PARTITIONS,
                    "lease_ttl_secs": ttl,
                    "ack_wait_secs": 2,
                    "batch_size": 50,
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
            }
        ],
    }
    return doc


def publish(stream: Stream, hosts: int, per_host: int) -> None:
    for n in range(per_host):
        for h in range(hosts):
            host = f"host{h:03d}"
            token = PARTITIONS[h % len(PARTITIONS)]
            stream.publish(f"{token}.{host}", result_line(host, IOC, 443, local=1000 + n))


def count_outbox(target: PgTarget) -> int:
    conn = open_state(target)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


class Instance:
    def __init__(self, config: Config, target: PgTarget) -> None:
        self.stats = Stats()
        self.conn = open_state(target)
        self.pipeline = Pipeline(config, stats=self.stats, state=self.conn)

    def poll(self) -> None:
        self.pipeline.poll_once()

    def owned(self) -> set[str]:
        return set(self.stats.source_leases)

    def close(self) -> None:
        self.pipeline.close()
        self.conn.close()


def poll_until(instances: list[Instance], done: Any, secs: float = 30.0) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        for inst in instances:
            inst.poll()
        if done():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def run_status(stream: Stream, target: PgTarget, tmp_path: Path) -> dict[str, Any]:
    """``tracked-connections-alerts cluster-status`` of the test's configuration (a subprocess)."""
    doc = make_doc(stream, target)
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PG": target.dsn, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "alert_service", "cluster-status", str(path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return cast(dict[str, Any], json.loads(done.stdout))


def test_partitions_are_shared_and_every_message_is_processed_once(
    stream: Stream, pg_target: PgTarget, tmp_path: Path
) -> None:
    config = make_config(stream, pg_target)
    publish(stream, hosts=40, per_host=5)
    a = Instance(config, pg_target)
    b: Instance | None = None
    try:
        poll_until([a], lambda: len(a.owned()) == 4)
        b = Instance(config, pg_target)
        both = [a, b]
        # B joins: A gives up half at its next renewal, B takes them
        poll_until(both, lambda: len(a.owned()) == 2 and len(b.owned()) == 2)
        assert not a.owned() & b.owned()
        assert a.stats.partitions_owned == 2
        service = build_delivery_service(config, pg_target, stats=a.stats)
        try:
            health = service.health()[1]
        finally:
            service.stop()
        assert health["streams"]["partitions_owned"] == 2
        assert set(health["streams"]["leases"]) == a.owned()
        assert all(v.startswith("token ") for v in health["streams"]["leases"].values())
        poll_until(both, lambda: count_outbox(pg_target) == 200)
        for inst in both:
            inst.poll()
        status = run_status(stream, pg_target, tmp_path)
        parts = {p["source"]: p for p in status["partitions"]}
        assert set(parts) == a.owned() | b.owned()
        assert {p["lease"] for p in parts.values()} == {"held"}
        assert len({p["owner"] for p in parts.values()}) == 2
        assert len(status["members"]) == 2
        assert {p["pending_messages"] for p in parts.values()} == {0}  # no lag left
        assert status["errors"] == []
        # the test's stream takes <prefix>.>: more than the partitions read
        assert status["unread_subjects"] == [
            {"source": f"nats:{stream.name}/alerts", "stream": stream.name,
             "subjects": [f"{stream.prefix}.>"]},
        ]  # fmt: skip
    finally:
        a.close()
        if b is not None:
            b.close()
    assert count_outbox(pg_target) == 200
    assert a.stats.messages_received + b.stats.messages_received >= 200


def test_an_instance_that_lost_its_lease_cannot_commit(
    stream: Stream, pg_target: PgTarget
) -> None:
    config = make_config(stream, pg_target, ttl=2.0)
    a = Instance(config, pg_target)
    b = Instance(config, pg_target)
    try:
        poll_until([a], lambda: len(a.owned()) == 4)
        publish(stream, hosts=4, per_host=3)  # 3 messages per partition
        sources = stream_sources(a.pipeline)
        batch = None
        for _ in range(100):
            batch = next(iter(sources.poll()), None)  # A holds one partition's batch ...
            if batch is not None:
                break
        # The batch holds what the reader had when it packed it: 1 to 3 of the
        # partition's messages (its pull may be answered while they still arrive).
        assert batch is not None and 1 <= sum(len(c.lines) for c in batch.chunks) <= 3
        # ... and stalls past its lease: B takes every partition over
        poll_until([b], lambda: len(b.owned()) == 4, secs=20)
        poll_until([b], lambda: count_outbox(pg_target) == 12, secs=20)
        with pytest.raises(LeaseLostError):
            a.pipeline._commit(a.conn, batch)
        sources.failed(batch, LeaseLostError("lost"))
        assert batch.key not in a.owned()
    finally:
        a.close()
        b.close()
    assert count_outbox(pg_target) == 12  # A's late commit added nothing


def test_a_partitioned_source_needs_the_partition_in_its_subject() -> None:
    base: dict[str, Any] = {
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"name": "r", "notify": ["local"], "remote_port": [1]}],
    }
    sources = [
        {"nats": {"stream": "S", "subject": "a.*", "partitions": 4}},
        {"nats": {"stream": "S", "subject": "b.{partition}.*", "durable": "x"}},
    ]
    with pytest.raises(ConfigError) as err:
        build_config({**base, "sources": sources}, "t.yaml", environ={})
    text = str(err.value)
    assert (
        "$.sources[0]: nats.subject: a partitioned source's subject must hold {partition}" in text
    )
    assert "$.sources[1]: nats.partitions: a subject with {partition} needs partitions" in text
