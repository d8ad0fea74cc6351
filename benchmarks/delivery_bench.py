"""Delivery throughput: outbox rows sent per second, SQLite state vs PostgreSQL state.

Usage::

    python benchmarks/delivery_bench.py [--alerts 2000] [--runs 3] [--instances 2]

Each run queues ``--alerts`` alerts (every one a distinct host, so none is a dedup
repeat) for one webhook destination without a rate limit, starts the delivery
service — the same :func:`build_delivery_service` as ``run`` — and times from its
start until the receiver has accepted every alert. The receiver is a separate
process on 127.0.0.1 (HTTP/1.1, answers 200 at once), so it does not share the
interpreter with the workers.

Figures, each beside the baseline of the same run (SQLite, one instance):

* ``sqlite`` — the embedded default (baseline);
* ``postgresql`` — one instance on the PostgreSQL state (127.0.0.1:5432, database
  ``test``; ``TC_BENCH_PG_DSN`` overrides), in a schema of its own dropped afterwards;
* ``postgresql xN`` — ``--instances`` delivery services on that state sharing the
  outbox (each row claimed by one of them);
* ``postgresql row by row`` — one instance with ``batch_rows`` 1: a claim, two
  silence queries and a commit for every row, the way every row was recorded before
  batches were recorded together.

The runs alternate the backends and the median of ``--runs`` is printed with the
load average (the machine is shared). Each run also checks that every alert id
arrived exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from alert_service.config import build_config  # noqa: E402
from alert_service.deliver import build_delivery_service  # noqa: E402
from alert_service.match import Alert, alert_id  # noqa: E402
from alert_service.parse import Event  # noqa: E402
from alert_service.state.db import StateTarget, open_state  # noqa: E402
from alert_service.state.outbox import enqueue_alerts, transaction  # noqa: E402
from alert_service.state.postgres import PgTarget  # noqa: E402

PG_DSN = os.environ.get("TC_BENCH_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
NOW = 1_756_796_709.0


def serve(port_file: str) -> None:
    """The receiver process: count accepted POSTs per ``webhook-id``; ``GET /count``."""
    ids: Counter[str] = Counter()
    lock = threading.Lock()  # handler threads count while /count reads

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The status line and headers, then the body, are two writes: without
        # TCP_NODELAY the second waits for the client's delayed ACK (40 ms on Linux).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                ids[self.headers.get("webhook-id", "")] += 1
            self._reply(b"ok")

        def do_GET(self) -> None:
            with lock:
                repeats = sum(n - 1 for n in ids.values())
                doc = {"accepted": sum(ids.values()), "ids": len(ids), "repeats": repeats}
            self._reply(json.dumps(doc).encode())

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever(0.05)


class Receiver:
    """The receiver subprocess and its URL."""

    def __init__(self, workdir: Path) -> None:
        port_file = workdir / f"port-{uuid.uuid4().hex}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port_file)])
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError("receiver did not start")
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{port_file.read_text()}"
        self.url = self.base + "/hook"

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base + "/count", timeout=10) as reply:
            doc: dict[str, int] = json.loads(reply.read())
        return doc

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _alerts(n: int, tag: str) -> list[Alert]:
    out = []
    for i in range(n):
        event = Event(
            name="pack_tracked_connections_tracked_connections",
            pack="tracked_connections",
            query="tracked_connections",
            host_identifier=f"bench-{tag}-{i}",
            calendar_time="Tue Sep  2 07:05:09 2025 UTC",
            unix_time=int(NOW) + i,
            epoch=0,
            counter=1,
            action="added",
            columns=MappingProxyType(
                {"pid": 1000 + i, "remote_address": "198.51.100.7", "remote_port": 4444}
            ),
            decorations=MappingProxyType({}),
        )
        out.append(Alert(alert_id(event), "r", ("hook",), event))
    return out


def _drop(schema: str) -> None:
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def one_run(
    target: StateTarget, instances: int, alerts: int, receiver: Receiver, batch_rows: int = 20
) -> tuple[float, dict[str, int]]:
    """Queue ``alerts`` rows in ``target``, deliver them with ``instances`` services;
    return (seconds from start to the last accepted alert, receiver counts)."""
    doc: dict[str, Any] = {
        "sources": [{"path": "/nonexistent.log"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": receiver.url}],
        "rules": [{"name": "r", "notify": ["hook"], "remote_port": [4444]}],
        "delivery": {"poll_interval_secs": 0.05},
    }
    config = build_config(doc, "bench.yaml", environ={})
    before = receiver.counts()["accepted"]
    conn = open_state(target)
    with transaction(conn):
        enqueue_alerts(conn, _alerts(alerts, uuid.uuid4().hex[:8]), NOW)
    conn.close()
    services = [
        build_delivery_service(config, target, batch_rows=batch_rows) for _ in range(instances)
    ]
    started = time.perf_counter()
    for service in services:
        service.start()
    try:
        while receiver.counts()["accepted"] - before < alerts:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for service in services:
            service.stop()
    return elapsed, receiver.counts()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--serve", metavar="PORT_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="tcdb", dir="/tmp"))
    receiver = Receiver(workdir)
    figures: dict[str, list[float]] = {}
    schemas: list[str] = []
    repeats = 0
    try:
        for run in range(args.runs):
            plans: list[tuple[str, Callable[[], StateTarget], int, int]] = [
                ("sqlite", lambda: str(workdir / f"state-{uuid.uuid4().hex}.sqlite3"), 1, 20),
                ("postgresql", lambda: _pg(schemas), 1, 20),
                (f"postgresql x{args.instances}", lambda: _pg(schemas), args.instances, 20),
                ("postgresql row by row", lambda: _pg(schemas), 1, 1),
            ]
            if run % 2:
                plans.reverse()  # alternate the order: neither backend always goes first
            for name, make, instances, batch_rows in plans:
                before = receiver.counts()
                secs, after = one_run(make(), instances, args.alerts, receiver, batch_rows)
                repeats += after["repeats"] - before["repeats"]
                rate = args.alerts / secs
                figures.setdefault(name, []).append(rate)
                print(f"run {run + 1}: {name}: {rate:,.0f} alerts/s ({secs:.2f} s)", flush=True)
    finally:
        receiver.close()
        for schema in schemas:
            _drop(schema)
    base = statistics.median(figures["sqlite"])
    load = os.getloadavg()[0]
    print(f"\n{args.alerts} alerts per run, median of {args.runs} runs, load average {load:.2f}:")
    for name, rates in figures.items():
        median = statistics.median(rates)
        ratio = "baseline" if name == "sqlite" else f"{median / base:.2f} x sqlite"
        print(f"  {name:<22} {median:>8,.0f} alerts/s  ({ratio})")
    print(f"alert ids accepted more than once: {repeats}")
    return 0 if repeats == 0 else 1


def _pg(schemas: list[str]) -> PgTarget:
    schema = f"tc_bench_{uuid.uuid4().hex[:12]}"
    schemas.append(schema)
    return PgTarget(PG_DSN, schema)


if __name__ == "__main__":
    sys.exit(main())
