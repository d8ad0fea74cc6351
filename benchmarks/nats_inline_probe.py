"""What reading a stream costs in the reader process, and what it would cost inline.

Usage::

    python benchmarks/nats_inline_probe.py --lines 200000 --repeat 3

Needs the NATS server (JetStream) of the development machine (``--nats``). No
pipeline runs: this measures only the reading, to decide where it should run.
Every figure is printed beside its baseline of the same run.

1. ``reader`` (baseline): the ``nats`` source's reader process
   (:class:`~alert_service.source.nats_reader.ReaderProcess`) driven as the
   pipeline drives it: ``take`` a batch, ``ack`` it, until every line has come.
   CPU per line of this process (``pipe``: reading the answers and splitting the
   lines) and of the reader process (``reader``).
2. ``thread``: the same consumer read with nats-py in this process's own thread
   (:class:`NatsPyThreadReader`): the reader process's core (nats-py's client with
   the :class:`~alert_service.source.nats_bulk.BulkParser` and the
   :class:`~alert_service.source.nats_pull.PullConsumer`) on a private event loop
   that runs only inside each call, the payloads used as the lines (no packing, no
   pipe), driven the same way.
3. ``inline``: the same consumer read in this process's own thread, the way a
   stream source without a reader process could: one blocking socket, the same
   pull requests (``{"batch": N, "expires": ns}`` to
   ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``), the same protocol parser
   (:func:`~alert_service.source.nats_bulk.split_messages`), the payloads used as
   the lines as they are (no packing, no pipe), one ``AckAll`` per batch
   (published, not waited for), the next request sent a batch ahead (as the
   reader keeps one batch in flight). Only the plain, unauthenticated protocol: a
   probe, not a client (no TLS, no reconnecting).

With ``--pipeline``, the whole ``run`` path instead (``cluster_bench.py``'s
``file+sqlite`` and ``nats+sqlite`` figures, alternated): ``file`` (baseline),
``nats`` with the reader process, ``nats inline`` with :class:`InlineReader`
in its place, a stand-in with the reader process's interface that reads in the
pipeline's thread (the same plain-protocol probe: it handles only what these
runs need, new one-line messages without headers; not a client), and ``nats
thread`` with :class:`NatsPyThreadReader` in its place.

``server`` is the CPU of the local ``nats-server`` process over the same span
(``/proc/<pid>/stat``; an upper bound: it serves every client). Lines are the
benchmark's Fleet-shaped ``tracked_connections`` lines, one message each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from cluster_bench import (  # noqa: E402
    Nats,
    load,
    make_lines,
    nats_server_pid,
    process_cpu_secs,
    run_file,
    run_nats,
)
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: E402

import alert_service.source.nats as nats_source  # noqa: E402
from alert_service.source.nats_batch import Taken, taken_of  # noqa: E402
from alert_service.source.nats_bulk import Delivered, split_messages  # noqa: E402
from alert_service.source.nats_reader import ReaderProcess, _Child  # noqa: E402

# lines/s, this process's CPU us/line, reader CPU us/line, nats-server CPU us/line
Result = tuple[float, float, float, float]


def own_cpu() -> tuple[float, float]:
    """CPU seconds of this process and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def add_consumer(bus: Nats, stream: str, durable: str, batch: int) -> None:
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.ALL,
        max_ack_pending=2 * batch,
        deliver_policy=DeliverPolicy.ALL,
    )
    bus.loop.run_until_complete(bus.js.add_consumer(stream, config))


def read_with_reader(url: str, stream: str, durable: str, batch: int, lines: int) -> Result:
    """Baseline: the reader process, driven like the pipeline drives it."""
    return read_with(ReaderProcess(), url, stream, durable, batch, lines)


def read_in_thread(url: str, stream: str, durable: str, batch: int, lines: int) -> Result:
    """The product's reader in this thread (``reader: thread``), driven the same way."""
    return read_with(NatsPyThreadReader(), url, stream, durable, batch, lines)


def read_with(  # noqa: PLR0917
    reader: ReaderProcess | NatsPyThreadReader, url: str, stream: str, durable: str, batch: int,
    lines: int,
) -> Result:
    """``reader`` driven like the pipeline drives it: take a batch, ack it."""
    server = nats_server_pid()
    got = 0
    try:
        reader.bind("probe", (url,), stream, durable, batch, 5.0, 0)
        taken = reader.take("probe", 1.0)  # the first batch: the start is not throughput
        got = len(taken.lines)
        if taken.reply:
            reader.ack("probe", taken.reply)
        first = got
        cpu0, server0, start = own_cpu(), process_cpu_secs(server), time.perf_counter()
        while got < lines:
            taken = reader.take("probe", 1.0)
            got += len(taken.lines)
            if taken.reply:
                reader.ack("probe", taken.reply)
        secs = time.perf_counter() - start
        cpu1_own = own_cpu()[0]
        server1 = process_cpu_secs(server)
    finally:
        reader.close()  # waited for: its CPU is in RUSAGE_CHILDREN
    cpu1_kids = own_cpu()[1]
    n = got - first
    return (
        n / secs,
        (cpu1_own - cpu0[0]) / n * 1e6,
        (cpu1_kids - cpu0[1]) / lines * 1e6,  # the whole process, start included
        (server1 - server0) / n * 1e6 if server0 >= 0 else -1.0,
    )


class Inline:
    """A blocking NATS connection read in this thread (plain protocol, no auth)."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("nats://").partition(":")
        self.sock = socket.create_connection((host, int(port or 4222)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as asyncio does
        self.buf = b""
        self.ready: list[Delivered] = []
        self.inbox = f"_INBOX.{uuid.uuid4().hex}".encode()
        self.sock.recv(65536)  # INFO
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "protocol": 1, "name": "inline probe"}
        self.sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                          + b"SUB " + self.inbox + b" 1\r\nPING\r\n")
        while b"PONG" not in self.buf:
            self.buf += self.sock.recv(65536)
        self.buf = b""

    def request(self, stream: str, durable: str, batch: int) -> None:
        body = json.dumps({"batch": batch, "expires": 5_000_000_000}).encode()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}".encode()
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject, self.inbox, len(body), body))

    def batch(self, count: int) -> list[bytes]:
        """The next ``count`` messages' payloads (the lines); the last reply subject
        is acknowledged (AckAll)."""
        routes = {b"1"}
        lines: list[bytes] = []
        last = b""
        while len(lines) < count:
            data = self.buf + self.sock.recv(1 << 20)
            ops, used = split_messages(data, routes)
            self.buf = data[used:]
            for op, arg in ops:
                if op == b"RUN":
                    msgs = arg[1]
                    lines += [m[3] for m in msgs]
                    last = msgs[-1][1]
                elif op == b"PING":
                    self.sock.sendall(b"PONG\r\n")
        self.sock.sendall(b"PUB %s 4\r\n+ACK\r\n" % last)
        return lines

    def messages(self, count: int, timeout_secs: float) -> list[Delivered]:
        """Up to ``count`` messages that arrive within ``timeout_secs`` (what has
        arrived by then; ``[]`` when none)."""
        ready = self.ready
        deadline = time.monotonic() + timeout_secs
        while len(ready) < count:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            finally:
                self.sock.settimeout(None)
            data = self.buf + chunk
            ops, used = split_messages(data, {b"1"})
            self.buf = data[used:]
            for op, arg in ops:
                if op == b"RUN":
                    ready += [m for m in arg[1] if m[2] is None]  # statuses dropped
                elif op == b"PING":
                    self.sock.sendall(b"PONG\r\n")
        msgs = ready[:count]
        del ready[:count]
        return msgs

    def close(self) -> None:
        self.sock.close()


class InlineReader:
    """Stands in for :class:`~alert_service.source.nats_reader.ReaderProcess` in
    ``--pipeline`` runs: each bound consumer is an :class:`Inline` connection read
    in the caller's thread, a batch requested ahead (as the reader keeps one)."""

    pid = None

    def __init__(self) -> None:
        self.started_at = 0.0
        self._feeds: dict[str, tuple[Inline, str, str, int]] = {}

    def bind(  # noqa: PLR0917 (ReaderProcess.bind's arguments)
        self, key: str, servers: tuple[str, ...], stream: str, consumer: str, batch: int,
        expires_secs: float, after: int,
    ) -> None:
        conn = Inline(servers[0])
        self._feeds[key] = (conn, stream, consumer, batch)
        conn.request(stream, consumer, batch)
        conn.request(stream, consumer, batch)

    def take(self, key: str, timeout_secs: float) -> Taken:
        conn, stream, consumer, batch = self._feeds[key]
        msgs = conn.messages(batch, timeout_secs)
        if not msgs:
            return Taken()
        conn.request(stream, consumer, batch)
        replies = [m[1] for m in msgs]
        tokens = b".".join(replies).split(b".")  # 9-token reply subjects
        seqs = array("q", map(int, tokens[5::9]))
        return Taken(messages=len(msgs), last=seqs[-1], pending=int(tokens[-1]),
                     reply=replies[-1].decode(), lines=[m[3] for m in msgs],
                     sequences=seqs.tobytes(), subjects=b"\n".join([m[0] for m in msgs]))

    def ack(self, key: str, reply: str) -> None:
        feed = self._feeds.get(key)
        if feed is not None:
            feed[0].sock.sendall(b"PUB %s 4\r\n+ACK\r\n" % reply.encode())

    def unbind(self, key: str) -> None:
        feed = self._feeds.pop(key, None)
        if feed is not None:
            feed[0].close()

    def close(self) -> None:
        for key in list(self._feeds):
            self.unbind(key)


class _ThreadFeed:
    """One consumer's messages for :class:`NatsPyThreadReader`: a whole batch (or
    what arrived within the take's timeout) turned into a :class:`Taken` with
    :func:`~alert_service.source.nats_batch.taken_of`, redeliveries left out by
    stream sequence as in the reader process."""

    def __init__(self, puller: Any, after: int) -> None:
        self.puller = puller
        self._after = after
        self._error: BaseException | None = None

    async def take(self, timeout_secs: float) -> Taken:
        if self._error is not None:
            raise self._error
        with contextlib.suppress(TimeoutError):  # what arrived by then is taken
            await asyncio.wait_for(self.puller.full.wait(), timeout_secs)
        msgs = await self.puller.take(0.0)
        if not msgs:
            return Taken()
        taken, self._after = taken_of(msgs, self._after)
        return taken

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error

    async def stop(self) -> None:
        await self.puller.stop()


class NatsPyThreadReader:
    """The reader process's interface, reading with nats-py in the caller's thread:
    the reader process's core (the same client, :class:`BulkParser` and pull
    consumer) on a private event loop that runs only inside these calls
    (``run_until_complete``; no second thread), each payload a line as it is (no
    packing, no pipe). A measurement of that design, not the product: errors become
    ``RuntimeError``, and the connection lost is not tested here.

    nats-py 2.16 reads the socket 32 KiB at a time (``DEFAULT_BUFFER_SIZE``,
    ``nats/aio/client.py`` ``_read_loop``), which is also its asyncio stream
    reader's limit; with the loop standing still while the pipeline works, a whole
    batch waits in the socket, so the probe raises it to 1 MiB for its process.
    """

    pid = None

    def __init__(self) -> None:
        import nats.aio.client  # noqa: PLC0415

        nats.aio.client.DEFAULT_BUFFER_SIZE = max(nats.aio.client.DEFAULT_BUFFER_SIZE, 1 << 20)
        self.started_at = time.monotonic()
        self._loop = asyncio.new_event_loop()
        self._child = _Child(_ThreadFeed)

    def _call(self, command: dict[str, Any], wait_secs: float) -> Any:
        answer = self._loop.run_until_complete(
            asyncio.wait_for(self._child.handle(command), wait_secs)
        )
        # nats-py writes a publish (the next pull request, an ack) in its flusher
        # task a turn or two later: let it go now, not at the next call.
        self._loop.run_until_complete(_turns(3))
        return answer

    def bind(  # noqa: PLR0917 (ReaderProcess.bind's arguments)
        self, key: str, servers: tuple[str, ...], stream: str, consumer: str, batch: int,
        expires_secs: float, after: int,
    ) -> None:
        self._call({"op": "bind", "key": key, "servers": list(servers), "stream": stream,
                    "consumer": consumer, "batch": batch, "expires_secs": expires_secs,
                    "after": after}, 30.0)

    def take(self, key: str, timeout_secs: float) -> Taken:
        taken = self._call({"op": "take", "key": key, "timeout_secs": timeout_secs},
                           timeout_secs + 5.0)
        assert isinstance(taken, Taken)
        return taken

    def ack(self, key: str, reply: str) -> None:
        self._call({"op": "ack", "key": key, "reply": reply}, 5.0)

    def unbind(self, key: str) -> None:
        self._call({"op": "unbind", "key": key}, 5.0)

    def close(self) -> None:
        loop = self._loop
        if loop.is_closed():
            return
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait_for(self._child.close(), 5.0))
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()


async def _turns(count: int) -> None:
    """Give the event loop ``count`` turns."""
    for _ in range(count):
        await asyncio.sleep(0)


def read_inline(url: str, stream: str, durable: str, batch: int, lines: int) -> Result:
    conn = Inline(url)
    server = nats_server_pid()
    try:
        requested = got = 0

        def top_up() -> int:  # a batch ahead, as the reader asks
            more = 0
            while requested + more < lines and requested + more - got < 2 * batch:
                conn.request(stream, durable, batch)
                more += batch
            return more

        requested += top_up()
        got = len(conn.batch(min(batch, lines)))
        first = got
        cpu0, server0, start = own_cpu()[0], process_cpu_secs(server), time.perf_counter()
        while got < lines:
            requested += top_up()
            got += len(conn.batch(min(batch, lines - got)))
        secs = time.perf_counter() - start
        cpu1, server1 = own_cpu()[0], process_cpu_secs(server)
    finally:
        conn.close()
    n = got - first
    return (n / secs, (cpu1 - cpu0) / n * 1e6, 0.0,
            (server1 - server0) / n * 1e6 if server0 >= 0 else -1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--pipeline", action="store_true",
                        help="the whole run path: file, nats, nats inline")
    args = parser.parse_args()
    data = make_lines(args.lines, args.hosts, 1)
    bus = Nats(args.nats)
    if args.pipeline:
        pipeline_runs(bus, data, args.batch, args.repeat)
        return
    reads = {"reader": read_with_reader, "thread": read_in_thread, "inline": read_inline}
    runs: dict[str, list[Result]] = {kind: [] for kind in reads}
    try:
        for _ in range(args.repeat):
            for kind, read in reads.items():  # alternated, one stream each
                name = f"PROBE_{uuid.uuid4().hex[:10].upper()}"
                prefix = f"probe{uuid.uuid4().hex[:8]}"
                bus.stream(name, [f"{prefix}.>"])
                try:
                    bus.publish([(f"{prefix}.{host}", line) for host, line in data])
                    add_consumer(bus, name, "probe", args.batch)
                    runs[kind].append(read(args.nats, name, "probe", args.batch, args.lines))
                finally:
                    bus.delete(name)
    finally:
        bus.close()
    print(f"{args.lines} lines, batch {args.batch}, median of {args.repeat}; {load()}")
    base = statistics.median(r[0] for r in runs["reader"])
    for kind, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        pipe = statistics.median(r[1] for r in results)
        reader = statistics.median(r[2] for r in results)
        server = statistics.median(r[3] for r in results)
        ratio = "(baseline)" if kind == "reader" else f"{rate / base:.2f} x reader"
        print(f"{kind:8} {rate:9.0f} lines/s {ratio:14} cpu this process {pipe:4.1f} + reader"
              f" {reader:4.1f} + server {server:4.1f} = {pipe + reader + server:4.1f} us/line"
              f"   (all runs: {', '.join(f'{r[0]:.0f}' for r in results)})")


def pipeline_runs(bus: Nats, data: list[tuple[str, bytes]], batch: int, repeat: int) -> None:
    """``--pipeline``: file, nats (reader process), nats inline and nats thread,
    alternated."""
    reader_class = nats_source.ReaderProcess
    readers = {"nats": reader_class, "nats inline": InlineReader, "nats thread": NatsPyThreadReader}
    runs: dict[str, list[Result]] = {"file": [], **{kind: [] for kind in readers}}
    try:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                runs["file"].append(run_file(data, tmp))
                for kind, reader in readers.items():
                    nats_source.ReaderProcess = reader  # type: ignore[misc]
                    state = os.path.join(tmp, f"{kind.replace(' ', '-')}.sqlite3")
                    runs[kind].append(run_nats(bus, data, state, {}, tmp, batch))
    finally:
        nats_source.ReaderProcess = reader_class  # type: ignore[misc]
        bus.close()
    print(f"{len(data)} lines, batch {batch}, median of {repeat}; {load()}")
    base = statistics.median(r[0] for r in runs["file"])
    for kind, results in runs.items():
        rate = statistics.median(r[0] for r in results)
        ratio = "(baseline)" if kind == "file" else f"{rate / base:.2f} x file"
        pipe = statistics.median(r[1] for r in results)
        reader = statistics.median(r[2] for r in results)
        server = statistics.median(r[3] for r in results)
        cpu = (f"cpu {pipe:4.1f} us/line" if kind == "file" else
               f"cpu pipe {pipe:4.1f} + reader {reader:4.1f} + server {server:4.1f}")
        print(f"{kind:12} {rate:9.0f} lines/s {ratio:12} {cpu}"
              f"   (all runs: {', '.join(f'{r[0]:.0f}' for r in results)})")


if __name__ == "__main__":
    main()
