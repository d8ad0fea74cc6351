"""The process that pulls messages from NATS for one alert-service instance.

Why a process: the pipeline is CPU bound in one thread, and nats-py (pure Python
on asyncio) spends several microseconds of CPU per message in its protocol parser,
message objects and subscription queue. In the same process both share one
interpreter lock, and a stream source reached about a third of the file source's
throughput (``benchmarks/cluster_bench.py``). In a child process the NATS work runs
on another core; the pipeline's thread receives one byte string per batch
(:mod:`alert_service.source.nats_batch`) and splits it into lines.

The pipeline's side, :class:`ReaderProcess`, starts ``python -m
alert_service.source.nats_reader`` and sends it commands, one at a time, each
answered before the next is sent; every frame both ways is a 4-byte big-endian
length and that many bytes. A command is JSON with ``op``:

* ``bind`` (``key``, ``servers``, ``stream``, ``consumer``, ``batch``,
  ``expires_secs``): read this durable consumer from now on (pull requests sent by
  :class:`~alert_service.source.nats_pull.PullConsumer`; the next batch is requested
  and delivered while the pipeline works on this one); answer ``{}``;
* ``take`` (``key``, ``timeout_secs``, ``after``): the delivered messages, up to a
  batch, waiting at most the timeout for the first; answer: a packed batch;
* ``ack`` (``key``, ``reply``): acknowledge (``AckAll``) up to the message of this
  reply subject, and wait for the server's confirmation; answer ``{}``;
* ``unbind`` (``key``): stop reading; answer ``{}``.

An answer to a command that failed is JSON ``{"error": text}`` instead. The child
exits when its standard input closes (the parent stopped or died).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from alert_service.source.nats_batch import Taken, pack_batch, unpack_batch

__all__ = ["ReaderError", "ReaderProcess"]

_STOP_WAIT_SECS = 5.0


class ReaderError(RuntimeError):
    """A command to the reader process failed (its text says why), or the process
    died or stopped answering."""


class ReaderProcess:
    """The pipeline's handle on the reader process (started on first use).

    Not thread-safe: one thread (the pipeline's) sends the commands.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._buf = bytearray()

    def bind(  # noqa: PLR0917 (one command's fields)
        self,
        key: str,
        servers: tuple[str, ...],
        stream: str,
        consumer: str,
        batch: int,
        expires_secs: float,
    ) -> None:
        """Start reading ``consumer`` of ``stream`` under ``key``.

        Raises:
            ReaderError: connecting or subscribing failed.
        """
        self._command(
            {
                "op": "bind",
                "key": key,
                "servers": list(servers),
                "stream": stream,
                "consumer": consumer,
                "batch": batch,
                "expires_secs": expires_secs,
            },
            30.0,
        )

    def take(self, key: str, timeout_secs: float, after: int) -> Taken:
        """The next batch of ``key`` (empty when nothing arrived within the timeout);
        messages not above stream sequence ``after`` are counted and left out.

        Raises:
            ReaderError: the consumer is gone, or the reader failed.
        """
        return unpack_batch(
            self._command(
                {"op": "take", "key": key, "timeout_secs": timeout_secs, "after": after},
                timeout_secs + 10.0,
            )
        )

    def ack(self, key: str, reply: str) -> None:
        """Acknowledge every message of ``key`` up to the one of ``reply``; returns
        when the server confirmed it.

        Raises:
            ReaderError: not confirmed (the messages are delivered again later).
        """
        self._command({"op": "ack", "key": key, "reply": reply}, 10.0)

    def unbind(self, key: str) -> None:
        """Stop reading ``key`` (a dead reader is left dead: it has nothing to stop)."""
        if self._proc is not None and self._proc.poll() is None:
            self._command({"op": "unbind", "key": key}, 10.0)

    def close(self) -> None:
        """Stop the process (its subscriptions end; unacknowledged messages are
        delivered again later)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(_STOP_WAIT_SECS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    # -- framing -----------------------------------------------------------------

    def _start(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        self.close()
        self._buf = bytearray()
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service.source.nats_reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _package_root()},
        )
        self._proc = proc
        return proc

    def _command(self, command: dict[str, Any], timeout_secs: float) -> bytes:
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        body = json.dumps(command).encode()
        try:
            proc.stdin.write(len(body).to_bytes(4, "big") + body)
            proc.stdin.flush()
            answer = self._read(proc.stdout.fileno(), time.monotonic() + timeout_secs)
        except (OSError, ReaderError) as err:
            self.close()  # its state is unknown: the next command starts a new one
            raise ReaderError(f"nats reader: {err}") from err
        if answer[:1] == b"{" and answer.startswith(b'{"error"'):
            raise ReaderError(str(json.loads(answer)["error"]))
        return answer

    def _read(self, fd: int, deadline: float) -> bytes:
        buf = self._buf
        need = 4
        size = -1
        while True:
            if size < 0 and len(buf) >= 4:
                size = int.from_bytes(buf[:4], "big")
                need = 4 + size
            if size >= 0 and len(buf) >= need:
                out = bytes(buf[4:need])
                del buf[:need]
                return out
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ReaderError("no answer in time")
            data = os.read(fd, max(1 << 20, need - len(buf)))
            if not data:
                raise ReaderError("the process exited")
            buf += data


def _package_root() -> str:
    """The directory holding the ``alert_service`` package, first on the child's path."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rest = os.environ.get("PYTHONPATH", "")
    return f"{root}{os.pathsep}{rest}" if rest else root


# -- the child -----------------------------------------------------------------------


class _Child:
    """The reader process's state: one client per server list, one puller per key."""

    def __init__(self) -> None:
        from nats.aio.client import Client  # noqa: PLC0415 (the child only)

        from alert_service.source.nats_pull import PullConsumer  # noqa: PLC0415

        self._clients: dict[tuple[str, ...], Client] = {}
        self._pullers: dict[str, PullConsumer] = {}
        self._puller_class = PullConsumer

    async def handle(self, command: dict[str, Any]) -> bytes:
        op = command["op"]
        key = str(command["key"])
        if op == "take":
            puller = self._pullers[key]
            msgs = await puller.take(float(command["timeout_secs"]))
            packed = [
                (
                    m.subject,
                    m.reply,
                    m.data,
                    m.headers.get("Content-Encoding") if m.headers else None,
                )
                for m in msgs
            ]
            return pack_batch(packed, int(command["after"]))
        if op == "ack":
            puller = self._pullers[key]
            await puller.client.request(str(command["reply"]), b"+ACK", timeout=5.0)
        elif op == "bind":
            await self._unbind(key)
            client = await self._client(tuple(command["servers"]))
            puller = self._puller_class(
                client,
                str(command["stream"]),
                str(command["consumer"]),
                int(command["batch"]),
                float(command["expires_secs"]),
            )
            await puller.start()
            self._pullers[key] = puller
        elif op == "unbind":
            await self._unbind(key)
        else:
            raise ValueError(f"unknown op {op!r}")
        return b"{}"

    async def _client(self, servers: tuple[str, ...]) -> Any:
        import nats  # noqa: PLC0415

        client = self._clients.get(servers)
        if client is None or client.is_closed:
            client = await nats.connect(
                servers=list(servers),
                name="tracked-connections-alerts reader",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                connect_timeout=5,
            )
            self._clients[servers] = client
        return client

    async def _unbind(self, key: str) -> None:
        puller = self._pullers.pop(key, None)
        if puller is not None:
            await puller.stop()

    async def close(self) -> None:
        for key in list(self._pullers):
            await self._unbind(key)
        for client in self._clients.values():
            await client.close()


async def _serve(read_fd: int, write_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    child = _Child()
    try:
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(4), "big")
                command = json.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                return  # the parent closed our input
            try:
                answer = await child.handle(command)
            except Exception as err:  # answered; the parent decides
                answer = json.dumps({"error": f"{type(err).__name__}: {err}"}).encode()
            data = len(answer).to_bytes(4, "big") + answer
            view = memoryview(data)
            while view:  # the parent is waiting for this answer: it reads at once
                view = view[os.write(write_fd, view) :]
    finally:
        await child.close()


def main() -> None:
    """Serve commands on standard input, answers on standard output."""
    write_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to standard error, not into the answers
    asyncio.run(_serve(0, write_fd))


if __name__ == "__main__":
    main()
