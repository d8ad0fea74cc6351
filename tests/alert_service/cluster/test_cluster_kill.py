"""Three ``run`` instances as subprocesses on one NATS stream and one PostgreSQL state.

Result lines of 1,000 hosts are published the way Fleet's NATS log destination
publishes them (one line per message, subject ``<prefix>.<p>.<host uuid>`` where
``<p>`` is the uuid's first hex digit: 16 partitions). Midway, one instance is killed
with SIGKILL; the receiver (a real HTTP server on 127.0.0.1) is stopped for a while;
the killed instance is started again later. Then:

* every alert the lines make is in the outbox once and reached the receiver (0 lost);
* a ``webhook-id`` reached the receiver twice only when its send's outcome was
  unknown: the row was claimed by the killed instance when it died — each such case
  is counted and must be one of those rows;
* each host's alerts are in the outbox in the order of its lines.

``TC_CLUSTER_LINES`` (default 50,000) scales the number of lines down for slow
machines; the CI run uses the default.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from test_nats_source import Stream

from alert_service.state.postgres import PgTarget
from alert_service.state.record import decode_record
from tests.helpers.services import need_nats, need_postgresql, unique_name

LINES = int(os.environ.get("TC_CLUSTER_LINES", "50000"))
HOSTS = 1000
ALERT_EVERY = 25  # one line in 25 goes to port 4444 and alerts
PARTITIONS = list("0123456789abcdef")
ROOT = Path(__file__).resolve().parents[3]


class Receiver:
    """A webhook receiver on 127.0.0.1 that can be stopped and started on its port."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ids: Counter[str] = Counter()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # keep-alive replies without a 40 ms wait

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                json.loads(body)
                with receiver.lock:
                    receiver.ids[self.headers.get("webhook-id", "")] += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a killed instance's connection reset mid-request is expected

        server = Server(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> Counter[str]:
        with self.lock:
            return Counter(self.ids)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def pg_target() -> Iterator[PgTarget]:
    dsn = need_postgresql()
    target = PgTarget(dsn, unique_name("tc"))
    yield target
    with psycopg.connect(dsn, autocommit=True) as conn:
        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        conn.execute(drop.format(sql.Identifier(target.schema)))


def host_uuid(n: int) -> str:
    return str(uuid.UUID(int=(n * 0x9E3779B97F4A7C15_F39CC0605CEDC834) % (1 << 128)))


def result_line(host: int, seq: int) -> bytes:
    """Line ``seq`` of ``host``: a new connection; every ALERT_EVERY-th one to 4444."""
    uid = host_uuid(host)
    doc = {
        "name": "pack/Global/tracked_connections",
        "hostIdentifier": uid,
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709 + seq,
        "epoch": 0,
        "counter": seq + 1,
        "numerics": False,
        "decorations": {"host_uuid": uid, "hostname": f"host-{host:04d}"},
        "columns": {
            "local_port": str(10000 + seq),
            "name": "curl",
            "pid": str(100 + seq),
            "remote_address": "203.0.113.9",
            "remote_port": "4444" if seq % ALERT_EVERY == 0 else "443",
        },
        "action": "added",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def write_config(path: Path, stream: Stream, target: PgTarget, receiver: Receiver) -> None:
    doc: dict[str, Any] = {
        "log_level": "info",
        "state": {
            "backend": "postgresql",
            "dsn": {"env": "TC_STATE_DSN"},
            "schema": target.schema,
            "claim_secs": 8,
        },
        "sources": [
            {
                "nats": {
                    "servers": [stream.url],
                    "stream": stream.name,
                    "subject": f"{stream.prefix}.{{partition}}.*",
                    "durable": "alerts",
                    "partitions": PARTITIONS,
                    "lease_ttl_secs": 4,
                    "ack_wait_secs": 5,
                    "batch_size": 500,
                },
                "poll_interval_secs": 0.1,
            }
        ],
        "notifiers": [
            {
                "name": "hook",
                "type": "webhook",
                "url": f"http://127.0.0.1:{receiver.port}/hook",
                "timeout_secs": 5,
                "connect_timeout_secs": 1,
            }
        ],
        "delivery": {
            "poll_interval_secs": 0.1,
            "initial_backoff_secs": 0.2,
            "max_backoff_secs": 1,
            "max_attempts": 0,
        },
        "known_packs": ["tracked_connections"],
        "rules": [{"name": "shell-port", "notify": ["hook"], "remote_port": [4444]}],
    }
    path.write_text(yaml.safe_dump(doc))


def start_instance(config: Path, target: PgTarget, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TC_STATE_DSN": target.dsn, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", str(config)],
            stdout=out,
            stderr=out,
            env=env,
            cwd=ROOT,
        )


def query(target: PgTarget, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
        return conn.execute(text.encode()).fetchall()


def wait_until(what: str, done: Any, secs: float) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


@pytest.mark.timeout(900)
def test_three_instances_kill_9_and_receiver_outage_lose_nothing(
    tmp_path: Path, receiver: Receiver, pg_target: PgTarget
) -> None:
    stream = Stream(need_nats())
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"instance-{i}.log" for i in range(3)]
    try:
        config = tmp_path / "alerts.yaml"
        write_config(config, stream, pg_target, receiver)
        per_host = LINES // HOSTS
        expected = HOSTS * len(range(0, per_host, ALERT_EVERY))
        # Fleet writes batches of lines; hosts interleave, each host's lines in order.
        for seq in range(per_host):
            for host in range(HOSTS):
                uid = host_uuid(host)
                subject = f"{stream.prefix}.{uid[0]}.{uid}"
                publish = stream.client.publish(subject, result_line(host, seq))
                stream.loop.run_until_complete(publish)
        stream.loop.run_until_complete(stream.client.flush())
        info = stream.loop.run_until_complete(stream.js.stream_info(stream.name))
        assert info.state.messages == per_host * HOSTS

        procs = [start_instance(config, pg_target, log) for log in logs]
        started_at = time.monotonic()

        def outbox() -> int:
            try:
                return int(query(pg_target, "SELECT COUNT(*) FROM outbox")[0][0])
            except psycopg.errors.UndefinedTable:
                return 0  # no instance has created the tables yet

        wait_until("a third of the alerts queued", lambda: outbox() >= expected // 3, 120)
        # the victim: the instance holding the most partitions now (lease owner names
        # carry the process id)
        owners = Counter(
            owner.split("-")[-2]
            for name, owner in query(pg_target, "SELECT name, owner FROM leases")
            if not name.startswith("member:")
        )
        index = max(range(3), key=lambda i: owners.get(str(procs[i].pid), 0))
        victim = procs[index]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.monotonic()
        # its partitions: the lease owner names carry the process id
        held = {
            name: token
            for name, owner, token in query(pg_target, "SELECT name, owner, token FROM leases")
            if f"-{victim.pid}-" in owner and not name.startswith("member:")
        }
        # The rows the killed instance had claimed: sends of unknown outcome.
        in_flight = {
            r[0]
            for r in query(
                pg_target,
                "SELECT alert_id FROM outbox WHERE state = 'pending' AND claim_until >"
                " EXTRACT(EPOCH FROM clock_timestamp())",
            )
        }
        def taken_over() -> bool:
            rows = query(pg_target, "SELECT name, token FROM leases")
            return all(token > held[name] for name, token in rows if name in held)

        wait_until("the killed instance's partitions taken over", taken_over, 60)
        takeover_secs = time.monotonic() - killed_at
        receiver.stop()  # the receiver is down for a while
        time.sleep(3)
        receiver.start()
        time.sleep(3)
        procs[index] = start_instance(config, pg_target, logs[index])  # it comes back
        restarted = logs[index]
        # Up before the end: a SIGTERM while Python still imports ends it by the signal.
        wait_until(
            "the restarted instance up",
            lambda: restarted.read_text(errors="replace").count('"service_started"') >= 2,
            120,
        )

        wait_until("every alert queued", lambda: outbox() == expected, 600)
        queued_at = time.monotonic()
        wait_until("every alert received", lambda: len(receiver.received()) >= expected, 600)
        done_at = time.monotonic()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(procs, logs, strict=True):
            code = proc.wait(30)
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            assert code == 0, f"{log.name} exited with {code}:\n{tail}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        stream.close()

    rows = query(pg_target, "SELECT alert_id, state, payload FROM outbox ORDER BY rowid")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == expected
    received = receiver.received()
    assert set(received) == set(ids)  # 0 lost
    duplicates = {i: n for i, n in received.items() if n > 1}
    assert set(duplicates) <= in_flight, "a duplicate that no unknown-outcome send explains"
    assert all(r[1] == "sent" for r in rows)
    # each host's alerts are queued in the order of its lines
    ports: dict[str, list[int]] = defaultdict(list)
    for _, _, payload in rows:
        alert = decode_record(payload).alert.as_dict()
        ports[alert["host"]].append(int(alert["connection"]["local_port"]))
    assert len(ports) == HOSTS
    assert all(p == sorted(p) for p in ports.values())
    assert held, "the killed instance held no partition"
    print(
        f"\ncluster: {per_host * HOSTS} lines, {expected} alerts, "
        f"{len(in_flight)} in flight at the kill, {len(duplicates)} duplicates; "
        f"its {len(held)} partitions taken over in {takeover_secs:.1f} s (lease 4 s); "
        f"queued {queued_at - killed_at:.1f} s and delivered {done_at - killed_at:.1f} s"
        f" after the kill ({killed_at - started_at:.1f} s before it)"
    )
