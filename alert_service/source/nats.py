"""Read result lines from a NATS JetStream stream (Fleet's ``nats`` log destination).

What arrives (fleetdm/fleet ``server/logging/nats.go``, Fleet 4.7x, and osqueryd
result lines published the same way): one message per result-log line, the JSON
object as the payload, on a subject Fleet builds from a template over the log (a
constant such as ``osquery.results`` or ``osquery.results.{log.decorations.host_uuid}``).
With JetStream on, Fleet publishes into a stream, whose messages this source reads
with a durable pull consumer. A payload may be compressed, said by its
``Content-Encoding`` header (``gzip`` or ``zstd``; ``identity`` or no header = plain);
a payload holding several lines (a publisher that batches) is split at ``\\n``.

Exactly-once effect (the contract of :class:`~alert_service.source.SourceSet`):

* each poll takes up to ``batch_size`` messages of one consumer, in stream order,
  from the reader process (:mod:`~alert_service.source.nats_reader`), which pulls
  and packs the next batch meanwhile (the consumer lets two batches be
  unacknowledged);
* the batch's :attr:`~alert_service.source.Batch.position` is the stream sequence of
  its last message (:func:`stream_position`), stored in the same transaction as the
  alerts and baseline changes of its lines;
* :meth:`NatsSources.committed` then has the batch acknowledged (one ``AckAll`` on
  its last message, sent by the reader, which waits for the server's confirmation
  and logs ``nats_ack_failed`` without it); a crash between the commit and the
  acknowledgement, or a lost acknowledgement, redelivers the messages, which are
  recognised by their stream sequence (not above the stored one, nor above the
  last one handed out by this binding), counted as ``messages_redelivered_skipped``,
  and acknowledged unprocessed;
* a failed commit unbinds the consumer; after a pause it is created again from the
  checkpoint, and the batch is read again;
* the reader process failing — it exited, stopped answering within a ``take``'s
  own wait plus :data:`~alert_service.source.nats_reader.ANSWER_SLACK_SECS`, or
  sent a garbled frame — is logged as ``nats_reader_failed``, counted as
  ``nats_reader_restarts`` and shown in ``source_problems`` until a new reader
  answers; the process is killed, and after a pause (0.5 s, doubling while new
  readers fail within 10 s of their start, at most 30 s) every consumer is created
  again from its checkpoint and read by a new reader: what the old one held but
  the pipeline had not committed is read again, what was committed is not;
* the reader's connection to NATS breaking fails its consumers at their next fetch
  (``source_unreachable``): messages on the wire when it broke count as delivered
  and would be acknowledged unread by the next ``AckAll``, so each consumer is
  bound again from its checkpoint after a pause;
* a message that cannot be decoded (unknown ``Content-Encoding``, corrupt gzip/zstd)
  is counted (``messages_undecodable``), logged, and acknowledged with its batch; a
  payload that is not a result line is a parse error like a bad line of a file.

A stream deleted and created again restarts its sequences: the stored position
carries the stream's creation time (:attr:`Position.fingerprint`,
:func:`stream_incarnation`), and a checkpoint of another stream incarnation is
ignored (logged as ``stream_recreated``), as is one whose sequence is above the
stream's last (which also catches a checkpoint stored without the creation time).

nats-py is asyncio based. Pulling, decoding and acknowledging run in the reader
process (one per instance, for all its consumers; see that module for why); the
stream and consumer management (stream info, creating and deleting consumers) runs
on an event loop in a daemon thread of this process, and the pipeline's thread
waits for each such call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from alert_service.logs import log_event
from alert_service.notify.literal import fit
from alert_service.source.manager import Batch, CheckpointStore
from alert_service.source.nats_batch import SUBJECT_LOG_CHARS, Taken, stream_chunk
from alert_service.source.nats_config import NatsSettings
from alert_service.source.nats_coverage import unread_subjects
from alert_service.source.nats_payload import PayloadError, decode_payload
from alert_service.source.nats_pull import client_error
from alert_service.source.nats_reader import ReaderError, ReaderFailedError, ReaderProcess
from alert_service.source.records import FileIdentity, Position
from alert_service.state.leases import LeaseLostError, PgLeases
from alert_service.state.postgres import PgConnection
from alert_service.stats import Stats

__all__ = [
    "STREAM_IDENTITY",
    "NatsSettings",
    "NatsSources",
    "PayloadError",
    "decode_payload",
    "partition_leases",
    "stream_incarnation",
    "stream_position",
]

_log = logging.getLogger(__name__)

STREAM_IDENTITY = FileIdentity(0, 0)
"""The :class:`FileIdentity` of every line and position of a stream source."""

_T = TypeVar("_T")
_MAX_RETRY_PAUSE_SECS = 30.0
_CALL_TIMEOUT_SECS = 10.0
_REQUEST_EXPIRES_SECS = 5.0  # a pull request's life on an idle stream
_READER_STABLE_SECS = 10.0  # a reader that failed sooner after its start backs off more
_UNREAD_SHOWN = 5  # stream subjects no partition reads named in the source's problem


def stream_incarnation(created: object) -> bytes:
    """The stream's creation time (``StreamInfo.created``) as the text kept in a
    checkpoint's fingerprint: UTC ISO 8601 with microseconds, ``b""`` when unknown.

    nats-py 2.16 gives a ``datetime`` (microseconds; the server's RFC 3339 text has
    nanoseconds, nats-py ``nats/js/api.py`` ``_parse_utc_iso``); text is read the same
    way, so instances on different nats-py versions store the same value.
    """
    when = created
    if isinstance(created, str):
        try:
            when = datetime.datetime.fromisoformat(created)  # 3.11: "Z", 9 digits
        except ValueError:
            return created.encode()
    if not isinstance(when, datetime.datetime):
        return b""
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.astimezone(datetime.UTC).isoformat(timespec="microseconds").encode()


def stream_position(subject: str, sequence: int, incarnation: bytes) -> Position:
    """A stream source's checkpoint: every message up to ``sequence`` is stored.

    Args:
        subject: the consumer's filter subject (for people reading the table).
        sequence: stream sequence of the last message committed.
        incarnation: the stream's creation time as text (``StreamInfo.created``), kept
            in :attr:`Position.fingerprint` to recognise a recreated stream.
    """
    return Position(subject, STREAM_IDENTITY, sequence, incarnation, len(incarnation))


class _Loop:
    """An asyncio event loop in a daemon thread; :meth:`call` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="nats-source", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, _T], timeout: float = _CALL_TIMEOUT_SECS) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            # It must not go on in the loop: a connect to a server that is down
            # retries for ever, and the next attempt would start another.
            future.cancel()
            raise

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):  # what is left is dropped with the loop
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(eq=False, slots=True)
class _Consumer:
    """One durable consumer (a source, or one partition of it) and where it stands."""

    settings: NatsSettings
    poll_interval_secs: float
    group: _Group
    bound: bool = False  # the reader process reads it
    incarnation: bytes = b""
    committed: int = 0  # stream sequence of the last committed message
    pending: str = ""  # reply subject of the last message of the batch handed out
    due: float = 0.0
    failures: int = 0
    token: int | None = None  # lease (fencing) token of a partition
    partition: str = ""  # its partition token; empty when not partitioned


@dataclass(eq=False, slots=True)
class _Group:
    """One configured source: its settings and the partitions this instance owns."""

    settings: NatsSettings
    poll_interval_secs: float
    owned: dict[str, _Consumer] = field(default_factory=dict)  # partition → consumer

    def partition_settings(self, partition: str) -> NatsSettings:
        """The settings of one partition's consumer."""
        s = self.settings
        return dataclasses.replace(
            s,
            durable=f"{s.durable}-{partition}",
            subject=s.subject.replace("{partition}", partition),
            partitions=(),
        )


class Leases(Protocol):
    """Partition ownership (:class:`~alert_service.state.leases.PgLeases`)."""

    ttl_secs: float

    def heartbeat(self) -> int: ...

    def acquire(self, name: str) -> int | None: ...

    def renew(self, name: str, token: int) -> bool: ...

    def release(self, name: str, token: int) -> None: ...

    def leave(self) -> None: ...

    def fence(self, conn: object, name: str, token: int) -> None: ...

    @property
    def instance(self) -> str: ...


def partition_leases(state: object, settings: Sequence[NatsSettings]) -> Leases | None:
    """The partition leases of this instance: in a PostgreSQL state when a stream
    source is partitioned; None otherwise (this instance reads every partition)."""
    partitioned = [s for s in settings if s.partitions]
    if not partitioned or not isinstance(state, PgConnection):
        return None
    ttl = min(s.lease_ttl_secs for s in partitioned)
    instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return PgLeases(state, instance, ttl)


class NatsSources:
    """Every configured ``nats`` source as the pipeline sees it (a ``SourceSet``).

    A source with ``partitions`` has one durable consumer per partition; this
    instance reads the partitions whose lease it holds (``leases``; all of them when
    None: one instance without a shared state), rebalancing every third of the lease
    time.

    Args:
        configs: ``(settings, poll_interval_secs)`` per source, in order.
        checkpoints: where each consumer's stored stream sequence is found when it
            starts (read again at every takeover of a partition).
        stats: counters and gauges to update (``messages_*``, ``source_pending_messages``,
            ``partitions_owned``, ``source_leases``).
        leases: partition ownership shared by the instances, or None.
        clock: wall time, seconds since the Unix epoch.
        monotonic: monotonic time in seconds.
    """

    def __init__(
        self,
        configs: Sequence[tuple[NatsSettings, float]],
        checkpoints: CheckpointStore,
        stats: Stats,
        *,
        leases: Leases | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._groups = [_Group(s, interval) for s, interval in configs]
        self._checkpoints = checkpoints
        self.stats = stats
        self._leases = leases
        self._clock = clock
        self._monotonic = monotonic
        self._loop: _Loop | None = None
        self._reader = ReaderProcess()
        self._clients: dict[tuple[str, ...], NatsClient] = {}
        self._by_key: dict[str, _Consumer] = {}
        self._pause = 0.0
        self._now = 0.0
        self._next_rebalance = 0.0
        self._rebalance_failures = 0
        self._reader_failures = 0  # in a row, each soon after the reader's start
        self._unread: dict[str, str] = {}  # source → subjects no partition reads

    # -- the pipeline's side -------------------------------------------------------

    def poll(self) -> Iterator[Batch]:
        """Fetch a batch from each consumer that is due; yield the ones with lines."""
        now = self._now = self._monotonic()
        if now >= self._next_rebalance:
            self._rebalance(now)
        next_due = min(now + 1.0, self._next_rebalance)
        consumers = list(self._by_key.values())
        for consumer in consumers:
            if now >= consumer.due and consumer.settings.name in self._by_key:
                batch = self._fetch(consumer, now, len(consumers))
                if batch is not None:
                    yield batch
            next_due = min(next_due, consumer.due)
        self._pause = max(0.0, next_due - self._monotonic())

    def committed(self, batch: Batch) -> None:
        """Acknowledge the batch's messages (their alerts and position are stored)."""
        consumer = self._by_key[batch.key]
        reply, consumer.pending = consumer.pending, ""
        if batch.position is not None:
            consumer.committed = batch.position.offset
        consumer.failures = 0
        if reply:
            self._ack(consumer, reply)
        if batch.chunks:
            self.stats.source_last_line_time[consumer.group.settings.name] = self._clock()

    def failed(self, batch: Batch, error: Exception) -> None:
        """Storing failed: have the batch delivered again after a pause (or, when the
        partition's lease was lost, to its new owner)."""
        consumer = self._by_key[batch.key]
        consumer.pending = ""
        lost = isinstance(error, LeaseLostError)
        consumer.failures += 1
        pause = 0.0 if lost else min(_MAX_RETRY_PAUSE_SECS, 0.5 * 2 ** min(consumer.failures, 10))
        log_event(
            _log,
            logging.WARNING if lost else logging.ERROR,
            "lease_lost" if lost else "state_transaction_failed",
            source=consumer.settings.name,
            error=type(error).__name__,
            reason=str(error),
            retry_in_secs=pause,
        )
        # Read again: the consumer is created again from the checkpoint.
        if lost:
            self._drop(consumer)
        else:
            self._unbind(consumer)
            consumer.due = self._now + pause

    def pause(self) -> float:
        """Seconds until a consumer is due, as of the end of the last :meth:`poll`."""
        return self._pause

    def close(self) -> None:
        """Release the leases and close the connections (unacknowledged messages are
        delivered again later)."""
        for consumer in list(self._by_key.values()):
            self._drop(consumer, release=True)
        if self._leases is not None:
            try:
                self._leases.leave()
            except sqlite3.Error as err:
                log_event(_log, logging.WARNING, "lease_release_failed", reason=str(err))
        loop = self._loop
        for client in self._clients.values():
            if loop is not None:
                try:
                    loop.call(client.close(), 5.0)
                except Exception as err:
                    log_event(_log, logging.WARNING, "nats_close_failed", reason=str(err))
        self._clients.clear()
        self._reader.close()
        self._next_rebalance = 0.0
        if loop is not None:
            loop.stop()
            self._loop = None
        self._publish_ownership()

    # -- ownership -------------------------------------------------------------------

    def _rebalance(self, now: float) -> None:
        """Own the non-partitioned sources, and this instance's share of partitions."""
        leases = self._leases
        interval = leases.ttl_secs / 3 if leases is not None else 5.0
        self._next_rebalance = now + interval
        for group in self._groups:
            if not group.settings.partitions and not group.owned:
                self._own(group, "", None)
        partitioned = [g for g in self._groups if g.settings.partitions]
        if not partitioned:
            return
        if leases is None:
            for group in partitioned:
                for partition in group.settings.partitions:
                    if partition not in group.owned:
                        self._own(group, partition, None)
            self._publish_ownership()
            return
        try:
            members = leases.heartbeat()
            for group in partitioned:
                self._rebalance_group(group, leases, members)
            self._rebalance_failures = 0
        except sqlite3.Error as err:
            self._rebalance_failures += 1
            log_event(_log, logging.ERROR, "lease_update_failed", reason=str(err))
            self._next_rebalance = now + min(interval, 1.0)
        self._publish_ownership()

    def _rebalance_group(self, group: _Group, leases: Leases, members: int) -> None:
        partitions = group.settings.partitions
        for consumer in list(group.owned.values()):
            assert consumer.token is not None
            if not leases.renew(consumer.settings.name, consumer.token):
                log_event(
                    _log,
                    logging.WARNING,
                    "lease_lost",
                    source=consumer.settings.name,
                    token=consumer.token,
                    reason="not renewed in time; another instance may own it now",
                )
                self._drop(consumer)
        share = -(-len(partitions) // members)  # ceil
        extra = len(group.owned) - share
        for partition in sorted(group.owned)[:max(0, extra)]:
            consumer = group.owned[partition]
            log_event(
                _log,
                logging.INFO,
                "partition_released",
                source=consumer.settings.name,
                members=members,
                share=share,
            )
            self._drop(consumer, release=True)
        if len(group.owned) >= share:
            return
        # Start looking at a place of our own, so instances do not all race for the
        # same partition.
        start = zlib.crc32(leases.instance.encode()) % len(partitions)
        for partition in partitions[start:] + partitions[:start]:
            if len(group.owned) >= share:
                break
            if partition in group.owned:
                continue
            name = group.partition_settings(partition).name
            token = leases.acquire(name)
            if token is not None:
                self._own(group, partition, token)

    def _own(self, group: _Group, partition: str, token: int | None) -> None:
        settings = group.partition_settings(partition) if partition else group.settings
        consumer = _Consumer(
            settings, group.poll_interval_secs, group, token=token, partition=partition
        )
        group.owned[partition] = consumer
        self._by_key[settings.name] = consumer
        if token is not None:
            log_event(
                _log, logging.INFO, "partition_acquired", source=settings.name, token=token
            )

    def _drop(self, consumer: _Consumer, *, release: bool = False) -> None:
        """Stop reading ``consumer`` (its partition goes to another instance)."""
        name = consumer.settings.name
        self._by_key.pop(name, None)
        for partition, owned in list(consumer.group.owned.items()):
            if owned is consumer:
                del consumer.group.owned[partition]
        self._unbind(consumer)
        if release and consumer.token is not None and self._leases is not None:
            try:
                self._leases.release(name, consumer.token)
            except sqlite3.Error as err:
                log_event(_log, logging.WARNING, "lease_release_failed", reason=str(err))
        pending = self.stats.source_pending_messages
        if name in pending:
            self.stats.source_pending_messages = {k: v for k, v in pending.items() if k != name}
        self._publish_ownership()

    def _unbind(self, consumer: _Consumer) -> None:
        """Stop the consumer's subscription and its fetch ahead; the next fetch binds
        again (creating the consumer again from the checkpoint)."""
        bound, consumer.bound = consumer.bound, False
        consumer.pending = ""
        if bound:
            try:
                self._reader.unbind(consumer.settings.name)
            except ReaderFailedError as err:
                self._reader_failed(err)
            except ReaderError as err:
                log_event(_log, logging.WARNING, "nats_unsubscribe_failed", reason=str(err))

    def _reader_failed(self, err: ReaderFailedError) -> None:
        """The reader process failed and was killed: every consumer it read is bound
        again (from its checkpoint, by a new reader) after a pause that doubles while
        new readers keep failing within ``_READER_STABLE_SECS`` of their start."""
        self._reader_failures += 1
        pause = min(_MAX_RETRY_PAUSE_SECS, 0.5 * 2 ** min(self._reader_failures - 1, 10))
        due = self._monotonic() + pause
        for consumer in self._by_key.values():
            consumer.bound = False  # its feed died with the reader
            consumer.pending = ""
            consumer.due = max(consumer.due, due)
        self.stats.nats_reader_restarts += 1
        text = f"nats reader failed: {err.reason}; restarting in {pause} s"
        problems = dict(self.stats.source_problems)
        for group in self._groups:
            problems[group.settings.name] = text
        self.stats.source_problems = problems  # replaced whole: /health reads it
        log_event(
            _log,
            logging.ERROR,
            "nats_reader_failed",
            pid=err.pid,
            reason=err.reason,
            restart_in_secs=pause,
            consumers=len(self._by_key),
        )

    def _publish_ownership(self) -> None:
        owned = {
            c.settings.name: ("local" if c.token is None else f"token {c.token}")
            for c in self._by_key.values()
            if c.settings.name != c.group.settings.name or c.token is not None
        }
        self.stats.partitions_owned = len(owned)
        self.stats.source_leases = owned  # replaced whole: /health reads it from a thread

    # -- consumers -----------------------------------------------------------------

    def _fetch(self, consumer: _Consumer, now: float, consumers: int) -> Batch | None:
        try:
            if not consumer.bound:
                self._connect(consumer)
            timeout = max(0.01, min(consumer.poll_interval_secs, 1.0) / consumers)
            # The next batch is requested and delivered while this one is processed
            # and committed (the consumer allows two batches unacknowledged).
            taken = self._reader.take(consumer.settings.name, timeout)
        except ReaderFailedError as err:
            self._reader_failed(err)
            return None
        except Exception as err:  # NATS down, or a client error: retried after a pause
            self._unreachable(consumer, now, err)
            return None
        self._clear_problem(consumer.group.settings.name)
        if self._monotonic() - self._reader.started_at >= _READER_STABLE_SECS:
            self._reader_failures = 0
        if not taken.messages:
            consumer.due = now + consumer.poll_interval_secs
            return None
        consumer.due = now
        return self._batch(consumer, taken)

    def _batch(self, consumer: _Consumer, taken: Taken) -> Batch:
        settings = consumer.settings
        stats = self.stats
        for seq, subject, reason in taken.undecodable:
            stats.messages_undecodable += 1
            log_event(
                _log,
                logging.WARNING,
                "message_undecodable",
                source=settings.name,
                subject=fit(subject, SUBJECT_LOG_CHARS, "plain"),
                stream_sequence=seq,
                reason=reason,
            )
        chunk = stream_chunk(STREAM_IDENTITY, settings.subject or settings.name, taken,
                             settings.stream, consumer.partition)
        stats.messages_received += taken.messages
        stats.messages_redelivered_skipped += taken.skipped
        stats.source_pending_messages = {  # replaced whole: /health reads it
            **stats.source_pending_messages,
            settings.name: taken.pending,
        }
        consumer.pending = taken.reply
        position = (
            stream_position(settings.subject, taken.last, consumer.incarnation)
            if taken.last > consumer.committed
            else None
        )
        fence: Callable[[Any], None] | None = None
        leases, token = self._leases, consumer.token
        if leases is not None and token is not None:
            name = settings.name

            def fence(conn: Any) -> None:
                leases.fence(conn, name, token)

        return Batch(settings.name, [chunk] if chunk is not None else [], position, fence)

    def _ack(self, consumer: _Consumer, reply: str) -> None:
        try:
            self._reader.ack(consumer.settings.name, reply)
        except ReaderFailedError as err:  # read again from the checkpoint: not doubled
            self._reader_failed(err)

    def _connect(self, consumer: _Consumer) -> None:
        """Connect, check the stream, create or bind the durable consumer."""
        if self._loop is None:
            self._loop = _Loop()
        loop = self._loop
        settings = consumer.settings
        client = self._clients.get(settings.servers)
        if client is None or client.is_closed:
            client = loop.call(
                nats.connect(
                    servers=list(settings.servers),
                    name=f"tracked-connections-alerts {settings.durable}",
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    connect_timeout=5,
                    error_cb=client_error,
                )
            )
            self._clients[settings.servers] = client
        js = client.jetstream()
        info = loop.call(js.stream_info(settings.stream))
        consumer.incarnation = stream_incarnation(info.created)
        if consumer.group.settings.partitions:
            self._check_coverage(consumer.group, list(info.config.subjects or []))
        self._load_checkpoint(consumer, int(info.state.last_seq or 0))
        # A partition's consumer is named after the lease token, so an instance that
        # lost the lease (it stalled) can no longer pull from its successor's consumer.
        durable = settings.durable if consumer.token is None else (
            f"{settings.durable}-t{consumer.token}"
        )
        if consumer.committed:
            policy, start = DeliverPolicy.BY_START_SEQUENCE, consumer.committed + 1
        else:
            policy = DeliverPolicy.ALL if settings.deliver_all else DeliverPolicy.NEW
            start = None
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.ALL,
            ack_wait=settings.ack_wait_secs,
            max_ack_pending=2 * settings.batch_size,  # a batch, and the one fetched ahead
            deliver_policy=policy,
            opt_start_seq=start,
            filter_subject=settings.subject or None,
        )
        stale = f"{settings.durable}-t" if consumer.token is not None else durable
        loop.call(_replace_consumer(client, settings.stream, config, stale))
        self._reader.bind(
            settings.name,
            settings.servers,
            settings.stream,
            durable,
            settings.batch_size,
            _REQUEST_EXPIRES_SECS,
            consumer.committed,
        )
        consumer.bound = True
        log_event(
            _log,
            logging.INFO,
            "nats_consumer_bound",
            source=settings.name,
            consumer=durable,
            subject=settings.subject,
            committed_sequence=consumer.committed,
        )

    def _check_coverage(self, group: _Group, stream_subjects: list[str]) -> None:
        """Compare the stream's subjects with the partition filters of ``group``; log
        ``nats_subjects_unread`` when the stream accepts subjects no partition reads
        (once per change) and keep it as the source's problem
        (:mod:`~alert_service.source.nats_coverage`)."""
        settings = group.settings
        subjects = stream_subjects or [settings.stream]  # none configured: its name
        filters = [group.partition_settings(p).subject for p in settings.partitions]
        unread = unread_subjects(subjects, filters)
        name = settings.name
        if not unread:
            self._unread.pop(name, None)
            return
        shown = ", ".join(unread[:_UNREAD_SHOWN]) + (
            f" and {len(unread) - _UNREAD_SHOWN} more" if len(unread) > _UNREAD_SHOWN else ""
        )
        text = (
            f"stream {settings.stream} accepts subjects no partition reads: {shown}; "
            f"partitions read {settings.subject} for {len(filters)} tokens; a message "
            "published there is stored and never read"
        )
        if self._unread.get(name) == text:
            return
        self._unread[name] = text
        problems = dict(self.stats.source_problems)
        problems.setdefault(name, text)  # an outage shows first; this comes back after it
        self.stats.source_problems = problems
        log_event(
            _log,
            logging.WARNING,
            "nats_subjects_unread",
            source=name,
            stream=settings.stream,
            subjects=unread,
            partition_subject=settings.subject,
            partitions=len(filters),
            reason="messages on these subjects are stored by the stream and never read; "
            "narrow the stream's subjects to the partitions' (docs/troubleshooting.md)",
        )

    def _load_checkpoint(self, consumer: _Consumer, last_sequence: int) -> None:
        """Set ``consumer.committed`` from its checkpoint; 0 (read the stream anew)
        when the checkpoint is of another stream incarnation: its creation time
        differs, or its sequence is above the stream's ``last_sequence`` (a stream's
        last sequence never goes down; this also catches a checkpoint stored without
        the creation time, an empty fingerprint, which is otherwise used as it is)."""
        stored = self._checkpoints.load(consumer.settings.name)
        if stored is None:
            consumer.committed = 0
            return
        position = stored[0]
        other_time = bool(position.fingerprint) and position.fingerprint != consumer.incarnation
        if other_time or position.offset > last_sequence:
            log_event(
                _log,
                logging.WARNING,
                "stream_recreated",
                source=consumer.settings.name,
                stored_sequence=position.offset,
                last_sequence=last_sequence,
                reason="the stream was created again since the checkpoint; reading it anew",
            )
            consumer.committed = 0
            return
        consumer.committed = position.offset

    def _unreachable(self, consumer: _Consumer, now: float, err: BaseException) -> None:
        consumer.failures += 1
        pause = min(_MAX_RETRY_PAUSE_SECS, 0.5 * 2 ** min(consumer.failures, 10))
        consumer.due = now + pause
        self._unbind(consumer)
        name = consumer.group.settings.name
        reason = f"{type(err).__name__}: {err}"
        problems = dict(self.stats.source_problems)
        problems[name] = f"unreachable: {reason}"
        self.stats.source_problems = problems
        log_event(
            _log,
            logging.WARNING,
            "source_unreachable",
            source=consumer.settings.name,
            reason=reason,
            retry_in_secs=pause,
        )

    def _clear_problem(self, name: str) -> None:
        """The source was read: its outage is over; subjects no partition reads
        (:meth:`_check_coverage`) stay its problem."""
        have = self.stats.source_problems.get(name)
        want = self._unread.get(name)
        if have == want:
            return
        problems = dict(self.stats.source_problems)
        if want is None:
            del problems[name]
        else:
            problems[name] = want
        self.stats.source_problems = problems
        if have is not None:
            log_event(_log, logging.INFO, "source_found", source=name)


async def _consumer_names(client: NatsClient, stream: str) -> list[str]:
    """The names of the stream's consumers (JetStream API ``CONSUMER.NAMES``, which
    lists names only: a consumer deleted meanwhile cannot break the listing)."""
    names: list[str] = []
    while True:
        reply = await client.request(
            f"$JS.API.CONSUMER.NAMES.{stream}",
            json.dumps({"offset": len(names)}).encode(),
            timeout=_CALL_TIMEOUT_SECS,
        )
        doc = json.loads(reply.data)
        if "error" in doc:
            raise nats.js.errors.APIError.from_error(doc["error"])
        page = [str(n) for n in doc.get("consumers") or []]
        names += page
        if not page or len(names) >= int(doc.get("total", 0)):
            return names


async def _replace_consumer(
    client: NatsClient, stream: str, config: ConsumerConfig, stale: str
) -> None:
    """Delete the consumers named ``stale`` (or starting with it, for ``...-t``) and
    create ``config``'s, which starts just after the stored checkpoint.

    Starting each binding from the checkpoint keeps a partition's lines in stream
    order: messages a previous consumer handed to an instance that died or stalled
    are not waiting for redelivery behind newer ones, and none is acknowledged by a
    later ``AckAll`` without having been processed.
    """
    js = client.jetstream()
    names = await _consumer_names(client, stream)
    for name in names:
        if name == stale or (stale.endswith("-t") and name.startswith(stale)):
            with contextlib.suppress(nats.js.errors.NotFoundError):  # deleted already
                await js.delete_consumer(stream, name)
    await js.add_consumer(stream, config)
