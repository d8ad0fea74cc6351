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
  ``expires_secs``, ``after``): read this durable consumer from now on (pull
  requests sent by :class:`~alert_service.source.nats_pull.PullConsumer`); the next
  batch is requested, delivered and packed while the pipeline works on this one;
  messages not above stream sequence ``after`` (the checkpoint) or already handed
  out are redeliveries, counted and left out; answer ``{}``;
* ``take`` (``key``, ``timeout_secs``): the next packed batch, waiting at most the
  timeout; answer: a packed batch (no messages when none came);
* ``ack`` (``key``, ``reply``): acknowledge (``AckAll``) up to the message of this
  reply subject; no answer (the reader waits for the server's confirmation and
  logs ``nats_ack_failed`` when it does not come);
* ``unbind`` (``key``): stop reading; answer ``{}``.

An answer to a command that failed is JSON ``{"error": text}`` instead (raised as
:class:`ReaderError`; the reader is fine). The child exits when its standard input
closes (the parent stopped or died).

The process itself failing is :class:`ReaderFailedError`, translated in one place
(:meth:`ReaderProcess._command`): it exited (its exit status or signal), it did not
answer within the command's own wait plus :data:`ANSWER_SLACK_SECS` (hung or
stopped), or it sent a garbled frame (a length over :data:`MAX_FRAME_BYTES`, or an
answer that is not what the command answers). The process is then killed at once
(its state is unknown) and the next command starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from alert_service.logs import configure_logging, log_event
from alert_service.source.nats_batch import Taken, pack_parts, unpack_batch

__all__ = [
    "ANSWER_SLACK_SECS",
    "MAX_FRAME_BYTES",
    "ReaderError",
    "ReaderFailedError",
    "ReaderProcess",
]

ANSWER_SLACK_SECS = 5.0
"""How much longer than a command's own wait (a ``take``'s timeout) an answer may
take before the reader counts as hung, seconds."""
MAX_FRAME_BYTES = 1 << 30
"""The largest answer accepted, bytes; a longer length prefix is a garbled frame."""
_STOP_WAIT_SECS = 5.0
_PIPE_BYTES = 1 << 20
_log = logging.getLogger(__name__)


class ReaderError(RuntimeError):
    """A command to the reader process failed; its text says why (the reader's own
    error answer, e.g. NATS unreachable or the consumer deleted)."""


class ReaderFailedError(ReaderError):
    """The reader process itself failed; it has been killed.

    Attributes:
        pid: the failed process's id.
        reason: ``exited (code N)``, ``exited (signal N)``, ``no answer within S s``,
            ``garbled frame: ...``, or the OS error writing to it.
    """

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"nats reader {pid}: {reason}")
        self.pid = pid
        self.reason = reason


class ReaderProcess:
    """The pipeline's handle on the reader process (started on first use).

    Not thread-safe: one thread (the pipeline's) sends the commands.

    Attributes:
        started_at: monotonic time the current process started (0 before the first).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def bind(  # noqa: PLR0917 (one command's fields)
        self,
        key: str,
        servers: tuple[str, ...],
        stream: str,
        consumer: str,
        batch: int,
        expires_secs: float,
        after: int,
    ) -> None:
        """Start reading ``consumer`` of ``stream`` under ``key``; ``after`` is the
        stream sequence already committed (messages up to it are left out).

        Raises:
            ReaderError: connecting or subscribing failed.
            ReaderFailedError: the process failed (and was killed).
        """
        self._command_ok(
            {
                "op": "bind",
                "key": key,
                "servers": list(servers),
                "stream": stream,
                "consumer": consumer,
                "batch": batch,
                "expires_secs": expires_secs,
                "after": after,
            },
            30.0,
        )

    def take(self, key: str, timeout_secs: float) -> Taken:
        """The next batch of ``key`` (empty when nothing arrived within the timeout);
        redelivered messages are counted and left out.

        Raises:
            ReaderError: the consumer is gone, or NATS failed.
            ReaderFailedError: the process failed (and was killed).
        """
        answer = self._command({"op": "take", "key": key, "timeout_secs": timeout_secs},
                               timeout_secs)
        try:
            return unpack_batch(answer)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise self._fail(f"garbled frame: not a packed batch ({err})") from err

    def ack(self, key: str, reply: str) -> None:
        """Have every message of ``key`` up to the one of ``reply`` acknowledged; does
        not wait (the reader waits for the server's confirmation and logs
        ``nats_ack_failed`` when it does not come: the messages are then delivered
        again and left out as redeliveries).

        Raises:
            ReaderFailedError: the reader process is gone (and the ack with it).
        """
        proc = self._proc
        if proc is None:
            return  # its reader failed already; its consumers are read again anyway
        if proc.poll() is not None:
            raise self._fail(_exit_reason(proc))
        assert proc.stdin is not None
        body = json.dumps({"op": "ack", "key": key, "reply": reply}).encode()
        try:
            proc.stdin.write(len(body).to_bytes(4, "big") + body)
            proc.stdin.flush()
        except OSError as err:
            raise self._fail(_exit_reason(proc) if proc.poll() is not None else str(err)) from err

    @property
    def pid(self) -> int | None:
        """The running reader's process id; None when none runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def unbind(self, key: str) -> None:
        """Stop reading ``key`` (a dead reader is left dead: it has nothing to stop).

        Raises:
            ReaderError: the reader could not stop it.
            ReaderFailedError: the process failed (and was killed).
        """
        if self._proc is not None and self._proc.poll() is None:
            self._command_ok({"op": "unbind", "key": key}, 5.0)

    def close(self) -> None:
        """Stop the process, letting it send the acknowledgements it holds (its
        subscriptions end; unacknowledged messages are delivered again later)."""
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
        """The running process, or a new one when none runs.

        Raises:
            ReaderFailedError: the process exited since the last command (its
                consumers went with it: they must be bound again).
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is not None:
                raise self._fail(_exit_reason(proc))
            return proc
        level = logging.getLevelName(logging.getLogger("alert_service").getEffectiveLevel()).lower()
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service.source.nats_reader", level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _package_root()},
        )
        self._proc = proc
        assert proc.stdout is not None
        _widen_pipe(proc.stdout.fileno())
        self.started_at = time.monotonic()
        log_event(_log, logging.INFO, "nats_reader_started", pid=proc.pid)
        return proc

    def _command_ok(self, command: dict[str, Any], wait_secs: float) -> None:
        """:meth:`_command` for a command answered ``{}``."""
        answer = self._command(command, wait_secs)
        if answer != b"{}":
            start = bytes(answer[:40])
            raise self._fail(f"garbled frame: {start!r} is not an answer to {command['op']}")

    def _command(self, command: dict[str, Any], wait_secs: float) -> bytearray:
        """Send one command and return its answer; the one place where the process's
        failures become :class:`ReaderFailedError`.

        Args:
            command: the command (JSON).
            wait_secs: how long the reader may take by its own rules (a ``take``'s
                timeout); it counts as hung :data:`ANSWER_SLACK_SECS` later.

        Raises:
            ReaderError: the reader's error answer.
            ReaderFailedError: the process exited, hung or garbled its answer.
        """
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        body = json.dumps(command).encode()
        try:
            proc.stdin.write(len(body).to_bytes(4, "big") + body)
            proc.stdin.flush()
            answer = self._read(proc, proc.stdout.fileno(), wait_secs + ANSWER_SLACK_SECS)
        except OSError as err:  # its input closed: it exited
            raise self._fail(_exit_reason(proc) if proc.poll() is not None else str(err)) from err
        if answer.startswith(b'{"error"'):
            try:
                text = str(json.loads(answer)["error"])
            except (ValueError, KeyError, TypeError) as err:
                raise self._fail(f"garbled frame: {bytes(answer[:40])!r}") from err
            raise ReaderError(text)
        return answer

    def _read(self, proc: subprocess.Popen[bytes], fd: int, wait_secs: float) -> bytearray:
        """One answer frame from ``fd`` within ``wait_secs`` (its body; read straight
        into one buffer, as a batch is large and this is the pipeline's thread).

        Raises:
            ReaderFailedError: it exited, did not answer in time, or the length
                prefix is over :data:`MAX_FRAME_BYTES`.
        """
        deadline = time.monotonic() + wait_secs
        size = int.from_bytes(self._read_exact(proc, fd, 4, deadline, wait_secs), "big")
        if size > MAX_FRAME_BYTES:
            raise self._fail(f"garbled frame: length {size} over the limit")
        return self._read_exact(proc, fd, size, deadline, wait_secs)

    def _read_exact(
        self, proc: subprocess.Popen[bytes], fd: int, size: int, deadline: float, wait_secs: float
    ) -> bytearray:
        """Exactly ``size`` bytes from ``fd`` before ``deadline`` (monotonic seconds).

        Raises:
            ReaderFailedError: it exited or did not answer in time.
        """
        out = bytearray(size)
        view = memoryview(out)
        got = 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise self._fail(f"no answer within {wait_secs:g} s")
            count = os.readv(fd, [view[got:]])
            if not count:  # its output closed: it is exiting
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)
                raise self._fail(_exit_reason(proc))
            got += count
        return out

    def _fail(self, reason: str) -> ReaderFailedError:
        """Kill the process at once (its state is unknown; what it held is read again
        from the checkpoints) and return the error to raise."""
        proc, self._proc = self._proc, None
        pid = 0
        if proc is not None:
            pid = proc.pid
            if proc.poll() is None:
                proc.kill()  # SIGKILL ends a stopped process too
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        return ReaderFailedError(pid, reason)


def _widen_pipe(fd: int) -> None:
    """Let the answer pipe hold a whole batch (Linux ``F_SETPIPE_SZ``, up to
    ``/proc/sys/fs/pipe-max-size``, 1 MiB by default; pipe(7)): a batch of about
    600 KB then crosses in one write and one read, not in 16 pieces of 64 KiB each
    waking the other process. Where that cannot be done, the pipe stays as it is."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, setsize, _PIPE_BYTES)


def _exit_reason(proc: subprocess.Popen[bytes]) -> str:
    """``exited (code N)`` or ``exited (signal N)`` of an ended process."""
    code = proc.poll()
    if code is None:
        return "closed its output"
    return f"exited (signal {-code})" if code < 0 else f"exited (code {code})"


def _package_root() -> str:
    """The directory holding the ``alert_service`` package, first on the child's path."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rest = os.environ.get("PYTHONPATH", "")
    return f"{root}{os.pathsep}{rest}" if rest else root


# -- the child -----------------------------------------------------------------------


class _Feed:
    """One consumer's messages, a whole batch packed ahead of the pipeline.

    When a whole batch of messages has arrived it is packed at once, while the
    pipeline works on the previous one, so that the next ``take`` is answered
    without waiting; a ``take`` that finds nothing packed packs what has arrived
    (waiting for the first message). A message whose stream sequence is not above
    both the checkpoint (given at ``bind``) and the last message handed out by this
    binding is a redelivery and left out: a message handed out is either committed,
    or its batch fails and the consumer is bound again from the checkpoint.
    """

    def __init__(self, puller: Any, after: int) -> None:
        self.puller = puller
        self._after = after
        self._packed: list[bytes] | None = None
        self._error: BaseException | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def take(self, timeout_secs: float) -> list[bytes]:
        async with self._lock:
            if self._error is not None:
                raise self._error
            if self._packed is None:
                self._pack(await self.puller.take(timeout_secs))
            packed, self._packed = self._packed, None
        self._wake.set()
        return packed if packed is not None else pack_parts([], 0)[0]

    def fail(self, error: BaseException) -> None:
        """Make the next ``take`` raise ``error`` (this feed cannot go on)."""
        if self._error is None:
            self._error = error
        self._packed = None

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.puller.stop()

    def _pack(self, msgs: list[Any]) -> None:
        if not msgs:
            return
        self._packed, self._after = pack_parts(msgs, self._after)

    async def _run(self) -> None:
        puller = self.puller
        while True:
            await puller.full.wait()
            async with self._lock:
                if self._packed is None and puller.full.is_set():
                    try:
                        self._pack(await puller.take(0.0))
                    except Exception as err:  # handed to the next take
                        self._error = err
                        return
            self._wake.clear()
            if self._packed is not None:
                await self._wake.wait()


class _Child:
    """The reader's state: one client per server list, one feed per key.

    ``benchmarks/nats_inline_probe.py`` runs it in the pipeline's own thread with a
    feed of its own, to measure that design.

    Args:
        feed: makes a consumer's feed from its started puller and the checkpoint's
            stream sequence; :class:`_Feed` (a packed batch per ``take``) by default.
    """

    def __init__(self, feed: Callable[[Any, int], Any] | None = None) -> None:
        from nats.aio.client import Client  # noqa: PLC0415 (the child only)

        from alert_service.source.nats_pull import PullConsumer  # noqa: PLC0415

        self._clients: dict[tuple[str, ...], Client] = {}
        self._feeds: dict[str, Any] = {}
        self._feed = feed or _Feed
        self._acks: set[asyncio.Task[None]] = set()
        self._puller_class = PullConsumer

    async def handle(self, command: dict[str, Any]) -> Any:
        """Carry out one command; its answer: ``b"{}"``, or for ``take`` what the
        feed's ``take`` returns (a packed batch in parts, for :class:`_Feed`), or
        None for ``ack``, which has none."""
        op = command["op"]
        key = str(command["key"])
        if op == "take":
            return await self._feeds[key].take(float(command["timeout_secs"]))
        if op == "ack":
            feed = self._feeds.get(key)
            if feed is not None:
                task = asyncio.get_running_loop().create_task(self._ack(feed, command["reply"]))
                self._acks.add(task)
                task.add_done_callback(self._acks.discard)
            return None
        if op == "bind":
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
            self._feeds[key] = self._feed(puller, int(command["after"]))
        elif op == "unbind":
            await self._unbind(key)
        else:
            raise ValueError(f"unknown op {op!r}")
        return b"{}"

    @staticmethod
    async def _ack(feed: Any, reply: str) -> None:
        try:
            await feed.puller.client.request(reply, b"+ACK", timeout=5.0)
        except Exception as err:  # redelivered later and left out by sequence
            log_event(
                _log,
                logging.WARNING,
                "nats_ack_failed",
                consumer=feed.puller.consumer,
                reason=f"{type(err).__name__}: {err}",
            )

    async def _client(self, servers: tuple[str, ...]) -> Any:
        from alert_service.source.nats_bulk import bulk_client  # noqa: PLC0415
        from alert_service.source.nats_pull import client_error  # noqa: PLC0415

        client = self._clients.get(servers)
        if client is None or client.is_closed:
            client, _ = bulk_client()

            async def disconnected() -> None:
                self._connection_lost(client)

            await client.connect(
                servers=list(servers),
                name="tracked-connections-alerts reader",
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                connect_timeout=5,
                error_cb=client_error,
                disconnected_cb=disconnected,
            )
            self._clients[servers] = client
        return client

    def _connection_lost(self, client: Any) -> None:
        """Fail every feed on ``client``: messages the server had sent when the
        connection broke are lost on the wire but count as delivered, and the next
        ``AckAll`` would acknowledge them unread. The pipeline binds each consumer
        again from its checkpoint, which delivers them again."""
        for feed in self._feeds.values():
            if feed.puller.client is client:
                feed.fail(ConnectionError("the connection to NATS was lost"))

    async def _unbind(self, key: str) -> None:
        feed = self._feeds.pop(key, None)
        if feed is not None:
            await feed.stop()

    async def close(self) -> None:
        if self._acks:  # acknowledgements on their way are sent before closing
            await asyncio.wait(set(self._acks), timeout=5.0)
        for key in list(self._feeds):
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
            if answer is None:
                continue
            try:  # the parent is waiting for this answer: it reads at once
                parts = answer if isinstance(answer, list) else [answer]
                size = sum(len(part) for part in parts)
                _write_all(write_fd, [size.to_bytes(4, "big"), *parts])
            except BrokenPipeError:
                return  # the parent is gone
    finally:
        await child.close()


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order to a blocking ``fd`` (gathered, without joining them)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if done:
            views[0] = views[0][done:]


def main() -> None:
    """Serve commands on standard input, answers on standard output; the log level
    is the first argument (logs go to standard error)."""
    configure_logging(sys.argv[1] if len(sys.argv) > 1 else "info", sys.stderr)
    write_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed goes to standard error, not into the answers
    asyncio.run(_serve(0, write_fd))


if __name__ == "__main__":
    main()
