"""Benchmark cluster mode: the ``nats`` source against the file source, and takeover time.

Usage::

    python benchmarks/cluster_bench.py                  # about 1-2 minutes
    python benchmarks/cluster_bench.py --lines 300000 --lease-ttl 10

Needs the NATS server (JetStream) and PostgreSQL of the development machine
(``--nats``, ``--pg``; defaults 127.0.0.1). Every figure is printed beside its
baseline measured in the same run, on the same machine; rates are lines per second
of one instance (one pipeline thread), state commits included.

1. Lines: ``--lines`` realistic ``tracked_connections`` result lines as Fleet writes
   them (compact JSON, decorations), from ``--hosts`` hosts; about 1 % match a rule.
2. ``file+sqlite`` (baseline): the lines in a real file, read by the file source
   (:class:`~alert_service.source.FileSources`), the whole ``run`` path
   (:meth:`~alert_service.pipeline.Pipeline.poll_once`) on a fresh SQLite state.
3. ``nats+sqlite``: the same lines published into a JetStream stream, one message per
   line (as Fleet's NATS log destination publishes them), read by the ``nats``
   source (durable pull consumer, ``--batch`` messages per fetch and commit,
   acknowledged after the commit), on a fresh SQLite state. Ratio to 2. The issue's
   target is >= 0.70.
4. ``nats+postgresql``: as 3 on a fresh PostgreSQL schema. Ratio to 2.
5. ``takeover``: instance A (a ``run`` subprocess) owns all ``--partitions``
   partitions of a partitioned source; it is killed with SIGKILL; instance B (in this
   process) polls. Printed: seconds until B owns every partition, and until B has
   processed a line published right after the kill, beside the lease time (the
   issue's target is within 2 x the lease time).
6. ``pinned``: ``run`` subprocesses on a source of 2 partitions with a PostgreSQL
   state, the lines published beforehand: 1 instance pinned to CPU 0 (baseline),
   then 2 instances, one pinned to CPU 0 and one to CPU 1 (``os.sched_setaffinity``;
   an instance's NATS reader process inherits its CPU). Rate: lines acknowledged
   per second (the consumers' acknowledgement floors, read every 0.2 s; the
   acknowledgement follows the commit), from when every partition is bound (and,
   with 2 instances, shared out) until 95 % are acknowledged; the time until all
   are is printed beside it.
7. ``lag``: one ``run`` subprocess configured and pinned as the 1-instance
   baseline of 6, while this process publishes result lines at 80 % of that
   baseline's rate for ``--lag-secs`` seconds (default 600, the issue's 10
   minutes); the consumers' lag (messages published and not yet acknowledged) is
   sampled every second. Printed: median, 95th
   percentile and largest lag, in messages and in seconds of input, and the lag
   when publishing ended. ``--lag-secs 0`` skips it.

Throughput figures (2-4) are run ``--repeat`` times (default 3) and the median is
printed; ``cpu`` is the CPU time per line of the instance: the pipeline's process
(``pipe``) and the NATS reader process (``reader``), in microseconds; ``server`` is
the CPU time of the local ``nats-server`` process over the same span (from
``/proc/<pid>/stat``; it serves every client of that server, so it is an upper
bound; absent when the server does not run on this machine).
``--throughput-only`` stops after them (no takeover, pinned or lag figures). The load
average of the machine is printed with each figure: on a machine shared with other
work, wall-clock rates of the two-process ``nats`` source fall more than the file
source's, and the CPU times are the steadier figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import nats  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from nats.js.api import StreamConfig  # noqa: E402
from psycopg import sql  # noqa: E402

from alert_service.config import Config, build_config  # noqa: E402
from alert_service.pipeline import Pipeline  # noqa: E402
from alert_service.state.db import open_state  # noqa: E402
from alert_service.state.postgres import PgTarget  # noqa: E402
from alert_service.stats import Stats  # noqa: E402

RULES: list[dict[str, Any]] = [
    {"name": "ioc", "notify": ["hook"], "remote_address": {"include": ["198.51.100.0/24"]}}
]
NOTIFIERS = [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}]


def make_lines(count: int, hosts: int, seed: int) -> list[tuple[str, bytes]]:
    """``(host uuid, line)`` pairs; about 1 % go to 198.51.100.0/24."""
    rnd = random.Random(seed)
    uuids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(hosts)]
    out = []
    for n in range(count):
        host = uuids[n % hosts]
        remote = f"198.51.100.{rnd.randrange(256)}" if rnd.random() < 0.01 else (
            f"203.0.{rnd.randrange(256)}.{rnd.randrange(256)}"
        )
        doc = {
            "name": "pack/Global/tracked_connections",
            "hostIdentifier": host,
            "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
            "unixTime": 1756796709 + n // hosts,
            "epoch": 0,
            "counter": 1 + n // hosts,
            "numerics": False,
            "decorations": {"host_uuid": host, "hostname": f"h-{host[:8]}"},
            "columns": {
                "pid": str(rnd.randrange(100, 60000)),
                "name": "curl",
                "path": "/usr/bin/curl",
                "family": "2",
                "protocol": "6",
                "local_address": "10.1.2.3",
                "local_port": str(rnd.randrange(32768, 61000)),
                "remote_address": remote,
                "remote_port": "443",
                "state": "ESTABLISHED",
                "direction": "outbound",
                "uid": "1000",
            },
            "action": "added",
        }
        out.append((host, json.dumps(doc, separators=(",", ":")).encode()))
    return out


def config(sources: list[dict[str, Any]], state_dir: str, **extra: Any) -> Config:
    doc = {
        "state_dir": state_dir,
        "sources": sources,
        "notifiers": NOTIFIERS,
        "rules": RULES,
        "known_packs": ["tracked_connections"],
        **extra,
    }
    return build_config(doc, "bench.yaml", environ=dict(os.environ))


def drain(pipeline: Pipeline, stats: Stats, lines: int) -> float:
    """Poll until ``lines`` lines are read; return lines per second, timed from the
    end of the first poll that read any (connecting and starting are not throughput)."""
    while stats.lines_read == 0:
        pipeline.poll_once()
    first = stats.lines_read
    start = time.perf_counter()
    while stats.lines_read < lines:
        pipeline.poll_once()
    return (stats.lines_read - first) / (time.perf_counter() - start)


def load() -> str:
    """The machine's load average (1, 5, 15 minutes) as text."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


class Cpu:
    """CPU seconds of this process and of its waited-for children over a span."""

    def __init__(self) -> None:
        self.own = self.children = 0.0
        self._start = self._now()

    @staticmethod
    def _now() -> tuple[float, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime

    def stop(self) -> None:
        own, kids = self._now()
        self.own, self.children = own - self._start[0], kids - self._start[1]


# lines/s, pipeline CPU us/line, reader CPU us/line, nats-server CPU us/line (-1: unknown)
Result = tuple[float, float, float, float]


def nats_server_pid() -> int | None:
    """The process id of the one ``nats-server`` on this machine; None when there is
    none, or more than one."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "nats-server":
                found.append(int(entry))
    return found[0] if len(found) == 1 else None


def process_cpu_secs(pid: int | None) -> float:
    """User plus system CPU seconds of a process (``/proc/<pid>/stat`` fields 14 and
    15, in clock ticks; proc(5)); -1 when unknown."""
    if pid is None:
        return -1.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_file(lines: list[tuple[str, bytes]], tmp: str) -> Result:
    path = os.path.join(tmp, "results.log")
    with open(path, "wb") as fh:
        fh.write(b"".join(line + b"\n" for _, line in lines))
    state_dir = os.path.join(tmp, f"file-state-{uuid.uuid4().hex[:6]}")
    cfg = config([{"path": path, "start_at": "beginning"}], state_dir)
    state = open_state(os.path.join(state_dir, "state.sqlite3"))
    stats = Stats()
    cpu = Cpu()
    pipeline = Pipeline(cfg, stats=stats, state=state)
    try:
        rate = drain(pipeline, stats, len(lines))
    finally:
        pipeline.close()
        state.close()
    cpu.stop()
    return rate, cpu.own / len(lines) * 1e6, 0.0, -1.0


class Nats:
    """A connection on its own event loop, for publishing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(nats.connect(url))
        self.js = self.client.jetstream()

    def stream(self, name: str, subjects: list[str]) -> None:
        self.loop.run_until_complete(self.js.add_stream(StreamConfig(name=name, subjects=subjects)))

    def publish(self, items: list[tuple[str, bytes]]) -> None:
        async def go() -> None:
            for subject, data in items:
                await self.client.publish(subject, data)
            await self.client.flush()

        self.loop.run_until_complete(go())

    def delete(self, name: str) -> None:
        self.loop.run_until_complete(self.js.delete_stream(name))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def run_nats(  # noqa: PLR0917
    bus: Nats,
    lines: list[tuple[str, bytes]],
    state: Any,
    state_cfg: dict[str, Any],
    tmp: str,
    batch: int,
) -> Result:
    name = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    bus.stream(name, [f"{prefix}.>"])
    try:
        bus.publish([(f"{prefix}.{host}", line) for host, line in lines])
        source = {
            "nats": {
                "servers": [bus.url],
                "stream": name,
                "subject": f"{prefix}.>",
                "batch_size": batch,
            },
            "poll_interval_secs": 0.05,
        }
        cfg = config([source], os.path.join(tmp, "nats-state"), **state_cfg)
        conn = open_state(state)
        stats = Stats()
        server = nats_server_pid()
        server_start = process_cpu_secs(server)
        cpu = Cpu()
        pipeline = Pipeline(cfg, stats=stats, state=conn)
        try:
            rate = drain(pipeline, stats, len(lines))
        finally:
            pipeline.close()
            conn.close()
        cpu.stop()
        server_end = process_cpu_secs(server)
        server_us = (
            (server_end - server_start) / len(lines) * 1e6
            if server_start >= 0 and server_end >= 0
            else -1.0
        )
        return rate, cpu.own / len(lines) * 1e6, cpu.children / len(lines) * 1e6, server_us
    finally:
        bus.delete(name)


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def leases_of(target: PgTarget) -> dict[str, str]:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
        try:
            rows = conn.execute(
                "SELECT name, owner FROM leases WHERE left(name, 7) <> 'member:'"
                " AND expires_at > EXTRACT(EPOCH FROM clock_timestamp())"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}
    return dict(rows)


def run_takeover(bus: Nats, dsn: str, partitions: int, ttl: float, tmp: str) -> tuple[float, float]:
    name = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    target = PgTarget(dsn, schema)
    bus.stream(name, [f"{prefix}.>"])
    tokens = [str(n) for n in range(partitions)]
    source = {
        "nats": {
            "servers": [bus.url],
            "stream": name,
            "subject": f"{prefix}.{{partition}}.*",
            "partitions": partitions,
            "lease_ttl_secs": ttl,
            "ack_wait_secs": max(1.0, ttl / 2),
        },
        "poll_interval_secs": 0.05,
    }
    state_cfg = {"state": {"backend": "postgresql", "dsn": {"env": "TC_BENCH_DSN"},
                           "schema": schema}}
    os.environ["TC_BENCH_DSN"] = dsn
    path = Path(tmp) / "a.yaml"
    doc = {"sources": [source], "notifiers": NOTIFIERS, "rules": RULES,
           "known_packs": ["tracked_connections"], "log_level": "warning", **state_cfg}
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    a = subprocess.Popen([sys.executable, "-m", "alert_service", "run", str(path)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = None
    pipeline = None
    try:
        deadline = time.monotonic() + 60
        while len(leases_of(target)) < partitions:
            if time.monotonic() > deadline:
                raise RuntimeError("instance A did not take its partitions")
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()
        bus.publish([(f"{prefix}.{t}.after-kill", make_lines(1, 1, 7)[0][1]) for t in tokens])
        cfg = config([source], os.path.join(tmp, "b"), **state_cfg)
        conn = open_state(target)
        stats = Stats()
        pipeline = Pipeline(cfg, stats=stats, state=conn)
        owned_at = processed_at = 0.0
        while not (owned_at and processed_at):
            pipeline.poll_once()
            now = time.monotonic()
            if not owned_at and stats.partitions_owned == partitions:
                owned_at = now
            if not processed_at and stats.lines_read >= partitions:
                processed_at = now
            if now - killed > 10 * ttl:
                raise RuntimeError("no takeover within 10 x the lease time")
            time.sleep(0.01)
        return owned_at - killed, processed_at - killed
    finally:
        if a.poll() is None:
            a.kill()
        if pipeline is not None:
            pipeline.close()
        if conn is not None:
            conn.close()
        bus.delete(name)
        drop_schema(dsn, schema)


def remaining(bus: Nats, stream: str, durable: str) -> tuple[int, int]:
    """``(consumers, messages)``: how many of the stream's consumers are named
    ``durable...``, and their messages not yet acknowledged (pending plus
    delivered-unacknowledged)."""

    async def go() -> tuple[int, int]:
        infos = await bus.js.consumers_info(stream)
        ours = [i for i in infos if (i.name or "").startswith(durable)]
        return len(ours), sum((i.num_pending or 0) + (i.num_ack_pending or 0) for i in ours)

    return bus.loop.run_until_complete(go())


def start_instance(doc: dict[str, Any], path: Path, cpu: int | None) -> subprocess.Popen[bytes]:
    """``run`` a configuration in a subprocess, pinned to ``cpu`` when given."""
    path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pin: Callable[[], None] | None = None
    if cpu is not None:
        core = cpu

        def pin() -> None:
            os.sched_setaffinity(0, {core})

    return subprocess.Popen(
        [sys.executable, "-m", "alert_service", "run", str(path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin,  # noqa: PLW1509 (affinity only; no threads started yet)
    )


def cluster_doc(  # noqa: PLR0917
    url: str, stream: str, prefix: str, durable: str, dsn: str, schema: str, batch: int
) -> dict[str, Any]:
    """A ``run`` configuration: 2 partitions (subjects ``<prefix>.<0|1>.<host>``),
    PostgreSQL state in ``schema``."""
    os.environ["TC_BENCH_DSN"] = dsn
    return {
        "sources": [
            {
                "nats": {
                    "servers": [url],
                    "stream": stream,
                    "subject": f"{prefix}.{{partition}}.*",
                    "durable": durable,
                    "partitions": 2,
                    "lease_ttl_secs": 3.0,
                    "batch_size": batch,
                },
                "poll_interval_secs": 0.05,
            }
        ],
        "notifiers": NOTIFIERS,
        "rules": RULES,
        "known_packs": ["tracked_connections"],
        "log_level": "warning",
        "state": {"backend": "postgresql", "dsn": {"env": "TC_BENCH_DSN"}, "schema": schema},
    }


def run_pinned(  # noqa: PLR0917
    bus: Nats, lines: list[tuple[str, bytes]], dsn: str, cpus: list[int], tmp: str, batch: int
) -> tuple[float, float]:
    """Lines acknowledged per second by ``len(cpus)`` instances on 2 partitions until
    95 % are, and the seconds until all are."""
    name = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    durable = "bench-pinned"
    bus.stream(name, [f"{prefix}.>"])
    bus.publish([(f"{prefix}.{zlib.crc32(h.encode()) % 2}.{h}", line) for h, line in lines])
    doc = cluster_doc(bus.url, name, prefix, durable, dsn, schema, batch)
    procs = [start_instance(doc, Path(tmp) / f"pinned{n}.yaml", cpu) for n, cpu in enumerate(cpus)]
    target = PgTarget(dsn, schema)
    try:
        deadline = time.monotonic() + 120
        # From when the partitions are shared out: 2 owners for 2 instances.
        while len(set(leases_of(target).values())) < len(cpus) or len(leases_of(target)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the instances did not share the partitions out")
            time.sleep(0.05)
        bound, left = remaining(bus, name, durable)
        while bound < 2:
            time.sleep(0.02)
            bound, left = remaining(bus, name, durable)
        start, first = time.monotonic(), left
        bulk = 0.0
        while left:
            if time.monotonic() > deadline:
                raise RuntimeError("the instances did not finish in time")
            time.sleep(0.05)
            bound, left = remaining(bus, name, durable)
            left = left if bound == 2 else 1
            if not bulk and left <= 0.05 * first:
                bulk = 0.95 * first / (time.monotonic() - start)
        return bulk, time.monotonic() - start
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        bus.delete(name)
        drop_schema(dsn, schema)


def run_lag(  # noqa: PLR0917
    bus: Nats, dsn: str, rate: float, secs: float, tmp: str, batch: int
) -> str:
    """Publish at ``rate`` lines/s for ``secs`` to one instance pinned to CPU 0 (the
    configuration of the ``pinned`` baseline); the lag, as text."""
    name = f"BENCH_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    durable = "bench-lag"
    bus.stream(name, [f"{prefix}.>"])
    doc = cluster_doc(bus.url, name, prefix, durable, dsn, schema, batch)
    proc = start_instance(doc, Path(tmp) / "lag.yaml", 0)
    pool = [
        (f"{prefix}.{zlib.crc32(h.encode()) % 2}.{h}", line)
        for h, line in make_lines(50_000, 1_000, 3)
    ]
    samples: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while remaining(bus, name, durable)[0] < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the instance did not bind its consumer")
            time.sleep(0.1)

        async def publish_and_sample() -> int:
            client = bus.client
            sent = 0
            start = time.monotonic()
            next_sample = start + 1.0
            while (now := time.monotonic()) < start + secs:
                due = int((now - start) * rate)
                while sent < due:
                    subject, data = pool[sent % len(pool)]
                    await client.publish(subject, data)
                    sent += 1
                await client.flush()
                if now >= next_sample:
                    next_sample += 1.0
                    infos = await bus.js.consumers_info(name)
                    samples.append(
                        sum((i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos)
                    )
                await asyncio.sleep(0.01)
            return sent

        sent = bus.loop.run_until_complete(publish_and_sample())
        end_lag = remaining(bus, name, durable)[1]
        ended = time.monotonic()
        while remaining(bus, name, durable)[1] > 0 and time.monotonic() - ended < 120:
            time.sleep(0.1)
        drained = time.monotonic() - ended
        alive = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        bus.delete(name)
        drop_schema(dsn, schema)
    ordered = sorted(samples) or [0]
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    med = statistics.median(ordered)
    return (
        f"{sent} lines in {secs:.0f} s ({sent / secs:.0f}/s), {len(samples)} samples:"
        f" lag median {med:.0f} msgs ({med / rate:.2f} s), p95 {p95} ({p95 / rate:.2f} s),"
        f" max {ordered[-1]} ({ordered[-1] / rate:.2f} s); at the end {end_lag},"
        f" drained in {drained:.2f} s{'' if alive else '; THE INSTANCE EXITED'}"
    )


def median_of(runs: list[Result]) -> Result:
    """The run with the median rate."""
    return sorted(runs)[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000, help="nats batch_size")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 dbname=test user=postgres")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--pinned-lines", type=int, default=300_000)
    parser.add_argument("--lag-secs", type=float, default=600.0, help="0 skips the lag run")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the throughput figures (file, nats+sqlite, nats+postgresql)")
    args = parser.parse_args(argv)

    lines = make_lines(args.lines, args.hosts, args.seed)
    size = sum(len(line) + 1 for _, line in lines)
    print(f"{len(lines)} lines, {size / len(lines):.0f} bytes each, {args.hosts} hosts")
    bus = Nats(args.nats)
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TC_BENCH_DSN"] = args.pg
            pg_cfg = {"state": {"backend": "postgresql", "dsn": {"env": "TC_BENCH_DSN"},
                                "schema": schema}}
            runs: dict[str, list[Result]] = {"file": [], "sqlite": [], "pg": []}
            for n in range(args.repeat):
                runs["file"].append(run_file(lines, tmp))
                sqlite_path = os.path.join(tmp, f"nats-sqlite-{n}.sqlite3")
                runs["sqlite"].append(run_nats(bus, lines, sqlite_path, {}, tmp, args.batch))
                drop_schema(args.pg, schema)
                runs["pg"].append(
                    run_nats(bus, lines, PgTarget(args.pg, schema), pg_cfg, tmp, args.batch)
                )
            file_rate, file_cpu, _, _ = median_of(runs["file"])
            print(f"median of {args.repeat} runs each; {load()}")
            print(f"file+sqlite        {file_rate:10.0f} lines/s   (baseline)"
                  f"         cpu {file_cpu:5.1f} us/line"
                  f"   (all runs: {', '.join(f'{r[0]:.0f}' for r in runs['file'])})")
            for key, label in (("sqlite", "nats+sqlite"), ("pg", "nats+postgresql")):
                rate, pipe, reader, server = median_of(runs[key])
                served = f" + server {server:5.1f}" if server >= 0 else ""
                print(f"{label:18} {rate:10.0f} lines/s   {rate / file_rate:.2f} x file"
                      f"   cpu pipe {pipe:5.1f} + reader {reader:5.1f}{served} us/line"
                      f"   (all runs: {', '.join(f'{r[0]:.0f}' for r in runs[key])})")
            if args.throughput_only:
                return 0
            owned, processed = run_takeover(bus, args.pg, args.partitions, args.lease_ttl, tmp)
            print(
                f"takeover           {owned:10.2f} s to own all {args.partitions} partitions,"
                f" {processed:.2f} s to the first lines"
                f"   lease {args.lease_ttl:.1f} s: {owned / args.lease_ttl:.2f} x lease"
            )
            pinned = make_lines(args.pinned_lines, args.hosts, args.seed + 1)
            print(f"pinned: {len(pinned)} lines on 2 partitions, postgresql state; {load()}")
            one, one_all = run_pinned(bus, pinned, args.pg, [0], tmp, args.batch)
            print(f"1 instance, cpu 0  {one:10.0f} lines/s   (baseline)   to 95 %;"
                  f" all acknowledged after {one_all:.1f} s")
            two, two_all = run_pinned(bus, pinned, args.pg, [0, 1], tmp, args.batch)
            print(f"2 instances, 0+1   {two:10.0f} lines/s   {two / one:.2f} x 1 instance"
                  f"   to 95 %; all acknowledged after {two_all:.1f} s   {load()}")
            if args.lag_secs > 0:
                target = 0.8 * one
                print(f"lag: publishing at 80 % of 1 instance on cpu 0 ({target:.0f} lines/s)"
                      f" for {args.lag_secs:.0f} s; {load()}")
                lag = run_lag(bus, args.pg, target, args.lag_secs, tmp, args.batch)
                print(f"lag                {lag}   {load()}")
    finally:
        drop_schema(args.pg, schema)
        bus.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
