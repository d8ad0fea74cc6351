"""One delivery worker: a thread that drains one destination's outbox rows.

Each destination has its own worker thread and its own SQLite connection, so a slow
or dead endpoint never delays another destination nor the log reading. A worker loops:

1. wait while the destination is paused (after a failure, until its backoff or the
   server's ``Retry-After`` ends);
2. when more than ``digest_threshold`` rows are due, fold up to ``digest_max_alerts``
   of them into one digest; otherwise take up to ``batch_rows`` rows due first
   (on PostgreSQL: claimed, :func:`~alert_service.state.outbox.due_rows`);
3. set aside rows an operator's silence matches (state ``silenced``,
   :mod:`alert_service.state.silences`) and rows whose dedup key is silenced (state
   ``suppressed``);
4. wait for a rate-limit token (in memory; on PostgreSQL a bucket row shared by the
   instances, :mod:`alert_service.state.buckets`, taken before the row is claimed),
   render, send;
5. record the outcome:

   * 2xx → ``sent`` and, in the same transaction, the silence of its dedup key
     (:mod:`alert_service.deliver.dedup`) — a failed send silences nothing;
   * retryable (timeouts, connection errors, a reply cut short, 408/425/429/5xx) →
     ``attempts + 1``, ``next_attempt_at = now + backoff`` (capped exponential with
     full jitter on the row's attempts, at least ``Retry-After`` up to
     ``max_retry_after_secs``), and the destination pauses for a backoff on its
     consecutive failures — one probe per pause while an endpoint is down, not one per
     row. ``notify_retrying`` logs both (``row_backoff_secs``,
     ``destination_pause_secs``) and ``retry_in_secs``, the longer of the two: the
     earliest the row is tried again;
   * the machine ran out of file descriptors, memory or threads (``EMFILE``,
     ``ENOMEM``, ...: :func:`~alert_service.errors.resource_exhaustion`) → retried
     like the above, whatever raised it: it says nothing about the alert;
   * anything else (other 4xx, 410 Gone, a Slack 200 without ``ok``, an unreadable row,
     ``max_attempts`` reached or older than ``max_age_secs``) → ``dead``, logged as
     ``notify_dead_lettered`` and counted.

A row is marked only after the request returns, so a row being sent when the process
is killed is still ``pending`` and is sent again after a restart (at least once);
the stable ``webhook-id`` / ``dedup_key`` lets receivers drop the repeat. The ``sent``
states of a batch are recorded in one transaction (before a rate-limit wait, and
within :data:`_RECORD_AFTER_SECS`), so a kill may repeat the rows sent since the
last record, each with its own ``webhook-id``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter

from alert_service.deliver.bucket import TokenBucket
from alert_service.deliver.clock import Clock, SystemClock
from alert_service.deliver.dedup import silence_key
from alert_service.deliver.retry import RetryPolicy, backoff_secs
from alert_service.deliver.settings import DestinationSettings
from alert_service.errors import NotifyError, RecordError, resource_exhaustion
from alert_service.logs import log_event
from alert_service.notify.base import Notifier
from alert_service.ops.metrics import ServiceMetrics
from alert_service.state.buckets import SharedTokenBucket
from alert_service.state.db import StateConnection, StateTarget, open_state
from alert_service.state.outbox import (
    OutboxRow,
    active_silences,
    count_due,
    due_rows,
    lock_keys,
    mark_dead,
    mark_retry,
    mark_sent,
    mark_silenced,
    mark_suppressed,
    next_due_at,
    release_claims,
    unlock_keys,
)
from alert_service.state.postgres import PgConnection, PgTarget
from alert_service.state.record import OutboxRecord, decode_record
from alert_service.state.silences import silence_for, silences_in_force
from alert_service.stats import Stats

__all__ = ["DestinationWorker", "WorkerHealth"]

_log = logging.getLogger(__name__)
_ERROR_PAUSE_SECS = 1.0
_RECORD_AFTER_SECS = 1.0
"""Longest time a delivered row of a batch waits for its ``sent`` record, seconds."""
_Counted = Literal["sent", "failed", "retries", "suppressed", "digests"]
"""The :class:`~alert_service.stats.Stats` fields a worker adds to."""


def _exhaustion_error(name: str, err: Exception) -> NotifyError | None:
    """A retryable error for a failure that only says the machine ran out of file
    descriptors, memory or threads (:func:`~alert_service.errors.resource_exhaustion`)."""
    what = resource_exhaustion(err)
    if what is None:
        return None
    return NotifyError(f"{name}: out of resources: {what}", retryable=True, error_type="resources")


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """A snapshot of one worker for ``/health``.

    Attributes:
        destination: notifier name.
        alive: the thread is running.
        consecutive_failures: failed attempts since the last success.
        paused_until: Unix seconds until which the destination waits, or None.
        last_error: the last failure's message (no secrets), or ``""``.
        last_success_at: Unix seconds of the last delivery, or None.
        started_at: Unix seconds when the worker was made (clock time).
    """

    destination: str
    alive: bool
    consecutive_failures: int
    paused_until: float | None
    last_error: str
    last_success_at: float | None
    started_at: float = 0.0


@dataclass(slots=True)
class _Item:
    """A due row with its decoded record, dedup key and dedup window (seconds)."""

    row: OutboxRow
    record: OutboxRecord
    key: str
    window_secs: float


class DestinationWorker:
    """Deliver one destination's outbox rows in a thread.

    Args:
        notifier: the destination.
        db_path: the state database; the worker opens its own connection.
        policy: retries, backoff, dedup window, poll interval.
        settings: rate limit and digest of this destination.
        metrics: counters to update.
        stats: pipeline counters (``sent``, ``failed``, ``retries``, ``suppressed``,
            ``digests``), updated under ``stats_lock``.
        stats_lock: lock shared by every worker for ``stats``.
        clock: time and sleeps (:class:`~alert_service.deliver.clock.ScaledClock` in tests).
        rng: uniform [0, 1) source for jitter.
        batch_rows: rows read per query when not folding a digest.
    """

    def __init__(
        self,
        notifier: Notifier,
        db_path: StateTarget,
        policy: RetryPolicy,
        settings: DestinationSettings,
        *,
        metrics: ServiceMetrics | None = None,
        stats: Stats | None = None,
        stats_lock: threading.Lock | None = None,
        clock: Clock | None = None,
        rng: Callable[[], float] = random.random,
        batch_rows: int = 20,
    ) -> None:
        self.notifier = notifier
        self.name = notifier.name
        self.db_path = db_path
        self.policy = policy
        self.settings = settings
        self.metrics = metrics if metrics is not None else ServiceMetrics()
        self.stats = stats if stats is not None else Stats()
        self.stats_lock = stats_lock if stats_lock is not None else threading.Lock()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.rng = rng
        self.batch_rows = max(1, batch_rows)
        rate, burst = settings.rate_limit_per_minute, settings.rate_limit_burst
        shared = isinstance(db_path, PgTarget)  # instances share the outbox: and the limit
        self.bucket = TokenBucket(rate, burst, self.clock.time) if rate and not shared else None
        self.shared_bucket = SharedTokenBucket(self.name, rate, burst) if rate and shared else None
        self._token_held = False
        self._keys_locked = False  # dedup keys locked for this step (PostgreSQL)
        self.stop_event = threading.Event()
        self.consecutive_failures = 0
        self.paused_until: float | None = None
        self.last_error = ""
        self.last_success_at: float | None = None
        self.started_at = self.clock.time()
        self._thread: threading.Thread | None = None

    # -- thread control ---------------------------------------------------------

    def start(self) -> None:
        """Start the thread (daemon: a stuck request never blocks interpreter exit)."""
        self._thread = threading.Thread(target=self.run, name=f"deliver-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after the current request."""
        self.stop_event.set()

    def join(self, timeout_secs: float | None = None) -> bool:
        """Wait for the thread; return True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout_secs)
        return not self._thread.is_alive()

    def health(self) -> WorkerHealth:
        """Return a snapshot for ``/health``."""
        return WorkerHealth(
            destination=self.name,
            alive=self._thread is not None and self._thread.is_alive(),
            consecutive_failures=self.consecutive_failures,
            paused_until=self.paused_until,
            last_error=self.last_error,
            last_success_at=self.last_success_at,
            started_at=self.started_at,
        )

    def run(self) -> None:
        """The thread body: open a connection, then :meth:`step` until stopped.

        An unexpected error (e.g. the database is locked for too long) is logged and
        the loop goes on after a pause; the worker never dies silently.
        """
        conn: StateConnection | None = None
        log_event(_log, logging.INFO, "delivery_worker_started", notifier=self.name)
        try:
            while not self.stop_event.is_set():
                try:
                    if conn is None:
                        conn = open_state(self.db_path)
                    pause = self.step(conn)
                except Exception as err:  # keep delivering whatever went wrong
                    log_event(
                        _log,
                        logging.ERROR,
                        "delivery_worker_error",
                        notifier=self.name,
                        reason=f"{type(err).__name__}: {err}",
                    )
                    if conn is not None:
                        conn.close()
                        conn = None
                    pause = _ERROR_PAUSE_SECS
                if pause > 0:
                    self.clock.wait(self.stop_event, pause)
        finally:
            if conn is not None:
                conn.close()
            log_event(_log, logging.INFO, "delivery_worker_stopped", notifier=self.name)

    # -- one step ---------------------------------------------------------------

    def step(self, conn: StateConnection) -> float:
        """Deliver what is due now (one digest or up to ``batch_rows`` rows).

        Returns:
            Clock seconds to wait before the next step (0 to go on at once).
        """
        now = self.clock.time()
        if self.paused_until is not None:
            if now < self.paused_until:
                return self.paused_until - now
            self.paused_until = None
        try:
            return self._step(conn, now)
        finally:
            if self._keys_locked:
                self._keys_locked = False
                unlock_keys(conn)

    def _step(self, conn: StateConnection, now: float) -> float:
        if self.shared_bucket is not None:
            return self._step_shared_limit(conn, self.shared_bucket, now)
        threshold = self.settings.digest_threshold
        if threshold > 0 and count_due(conn, self.name, now) > threshold:
            rows = due_rows(conn, self.name, now, self.settings.digest_max_alerts)
            self._deliver_digest(conn, rows)
            return 0.0
        rows = due_rows(conn, self.name, now, self.batch_rows)
        if not rows:
            return self._idle_secs(conn, now)
        self._deliver_batch(conn, rows)
        return 0.0

    def _idle_secs(self, conn: StateConnection, now: float) -> float:
        """Nothing due: clock seconds until the next row is due, at most one poll."""
        nxt = next_due_at(conn, self.name, now)
        poll = self.policy.poll_interval_secs
        return poll if nxt is None else min(poll, max(0.0, nxt - now))

    def _step_shared_limit(
        self, conn: StateConnection, bucket: SharedTokenBucket, now: float
    ) -> float:
        """One step under a rate limit shared by the instances (PostgreSQL).

        The token comes first and the rows after, one row (or one digest) per token:
        a claim is held only while its send lasts, never while waiting for tokens
        that the other instances' workers take too (a claim outliving
        ``claim_secs`` would let another worker send the row again).
        """
        assert isinstance(conn, PgConnection)
        due = count_due(conn, self.name, now)
        if due == 0:
            return self._idle_secs(conn, now)
        wait = bucket.take(conn)
        if wait > 0:
            return wait
        self._token_held = True
        try:
            threshold = self.settings.digest_threshold
            if threshold > 0 and due > threshold:
                rows = due_rows(conn, self.name, now, self.settings.digest_max_alerts)
                if rows:
                    self._deliver_digest(conn, rows)
            else:
                rows = due_rows(conn, self.name, now, 1)
                if rows:
                    self._deliver_one(conn, rows[0])
        finally:
            if self._token_held:  # nothing was sent: taken by another worker, or held back
                self._token_held = False
                bucket.give_back(conn)
        return 0.0

    # -- helpers ----------------------------------------------------------------

    def _prepare(
        self, conn: StateConnection, rows: Sequence[OutboxRow], *, defer_repeats: bool = False
    ) -> list[_Item]:
        """Parse rows; dead-letter unreadable ones, suppress silenced ones.

        A row whose dedup key an earlier row of ``rows`` has is suppressed (a digest
        folds them) or, with ``defer_repeats``, left pending with every row after it
        for the next step (:meth:`_cut_at_repeat`).
        """
        items: list[_Item] = []
        unreadable: list[OutboxRow] = []
        for row in rows:
            try:
                record = decode_record(row.payload, (self.name,))
            except RecordError as err:
                unreadable.append(row)
                log_event(
                    _log,
                    logging.ERROR,
                    "notify_dead_lettered",
                    notifier=self.name,
                    alert_id=row.alert_id,
                    rule=row.rule,
                    reason=f"unreadable payload: {err}",
                )
                continue
            window = record.dedup_window_secs
            items.append(
                _Item(
                    row,
                    record,
                    silence_key(self.name, record.alert.as_dict()),
                    self.policy.dedup_window_secs if window is None else window,
                )
            )
        if unreadable:
            mark_dead(conn, unreadable, "unreadable payload", attempted=False)
            self._count(self.metrics.dead_lettered, "failed", len(unreadable))
        if defer_repeats:
            items = self._cut_at_repeat(conn, items)
        if isinstance(conn, PgConnection):
            items = self._lock_keys(conn, items)
        items = self._drop_silenced(conn, items)
        windowed = [item for item in items if item.window_secs > 0]
        silenced = active_silences(conn, (i.key for i in windowed), self.clock.time())
        keep: list[_Item] = []
        seen: set[str] = set()
        dropped: list[OutboxRow] = []
        for item in items:
            if item.window_secs > 0 and (item.key in silenced or item.key in seen):
                dropped.append(item.row)
                continue
            if item.window_secs > 0:
                seen.add(item.key)
            keep.append(item)
        if dropped:
            mark_suppressed(conn, dropped, "repeat within the dedup window")
            self._count(self.metrics.suppressed, "suppressed", len(dropped))
            log_event(
                _log,
                logging.DEBUG,
                "notify_suppressed",
                notifier=self.name,
                alert_ids=[r.alert_id for r in dropped],
            )
        return keep

    def _cut_at_repeat(self, conn: StateConnection, items: list[_Item]) -> list[_Item]:
        """The items before the first one whose dedup key an earlier one has; the
        claims of the rest are given back.

        Rows sent one by one: whether the repeat is suppressed depends on whether the
        earlier row is delivered, which is known only after its send. Cutting there
        (rather than setting the repeat aside and going on) keeps the rows in the
        order they are sent row by row.
        """
        keys: set[str] = set()
        for index, item in enumerate(items):
            if item.window_secs <= 0:
                continue
            if item.key in keys:
                release_claims(conn, [i.row for i in items[index:]])
                return items[:index]
            keys.add(item.key)
        return items

    def _lock_keys(self, conn: PgConnection, items: list[_Item]) -> list[_Item]:
        """Lock the dedup keys of ``items`` for this step; the items whose key another
        instance's worker holds (it is sending that key now) are given back.

        Checked before the silences are read, and held until the step's sends are
        recorded: another instance sees the key either locked or silenced, never
        neither, so it sends no repeat (:func:`~alert_service.state.outbox.lock_keys`).
        """
        keys = {item.key for item in items if item.window_secs > 0}
        if not keys:
            return items
        self._keys_locked = True
        locked = lock_keys(conn, keys)
        keep = [i for i in items if i.window_secs <= 0 or i.key in locked]
        release_claims(conn, [i.row for i in items if i.window_secs > 0 and i.key not in locked])
        return keep

    def _drop_silenced(self, conn: StateConnection, items: list[_Item]) -> list[_Item]:
        """Mark the items an operator's silence matches ``silenced``; return the others."""
        in_force = silences_in_force(conn, self.clock.time())
        if not in_force or not items:
            return items
        keep: list[_Item] = []
        silenced: list[tuple[OutboxRow, str]] = []
        for item in items:
            silence = silence_for(in_force, item.record.alert.as_dict())
            if silence is None:
                keep.append(item)
            else:
                silenced.append((item.row, f"silence {silence.id}: {silence.comment}"))
        if silenced:
            mark_silenced(conn, silenced)
            self._count(self.metrics.suppressed, "suppressed", len(silenced))
            for row, reason in silenced:
                log_event(
                    _log,
                    logging.INFO,
                    "notify_silenced",
                    notifier=self.name,
                    alert_id=row.alert_id,
                    rule=row.rule,
                    reason=reason,
                )
        return keep

    def _rate_limit(self, conn: StateConnection) -> bool:
        """Wait for a token; return False when stopping."""
        if self._token_held:  # taken by this step before its rows were claimed
            self._token_held = False
            return True
        if self.shared_bucket is not None:
            assert isinstance(conn, PgConnection)
            while (wait := self.shared_bucket.take(conn)) > 0:
                if self.stop_event.wait(wait):  # the server's clock: real seconds
                    return False
            return True
        if self.bucket is None:
            return True
        while not self.bucket.take():
            if self.clock.wait(self.stop_event, self.bucket.wait_secs()):
                return False
        return True

    def _send(self, payload: Mapping[str, Any], key: str) -> None:
        started = time.monotonic()
        try:
            self.notifier.send(payload, idempotency_key=key)
        finally:
            self.metrics.duration.labels(self.name).observe(time.monotonic() - started)

    def _deliver_batch(self, conn: StateConnection, rows: Sequence[OutboxRow]) -> None:
        """Send ``rows`` one request each; record the sent ones together.

        Two queries check the whole batch against silences and dedup keys, and the
        ``sent`` states (with their silences) are committed in one transaction at
        the end of the batch — or earlier, before waiting for a rate-limit token and
        once the oldest unrecorded send is :data:`_RECORD_AFTER_SECS` old — instead of
        one transaction per row. A failure is recorded at once (its own
        transaction). A crash between a send and its record sends the row again later
        with the same ``webhook-id``, as for one row before.
        """
        items = self._prepare(conn, rows, defer_repeats=True)
        sent: list[_Item] = []
        oldest = 0.0

        def record() -> None:
            if sent:
                self._delivered(conn, sent, digest=False)
                sent.clear()

        try:
            for index, item in enumerate(items):
                if self.stop_event.is_set() or self.paused_until is not None:
                    release_claims(conn, [i.row for i in items[index:]])
                    break
                waiting = self.bucket is not None and self.bucket.wait_secs() > 0
                if waiting or time.monotonic() - oldest > _RECORD_AFTER_SECS:
                    record()
                if not self._rate_limit(conn):
                    release_claims(conn, [i.row for i in items[index:]])
                    break
                # A failure is handled after the earlier successes are recorded, as it
                # would be row by row (the backoff counts failures since a success).
                if self._attempt(conn, item, before_failure=record):
                    oldest = oldest if sent else time.monotonic()
                    sent.append(item)
        finally:
            record()

    def _deliver_one(self, conn: StateConnection, row: OutboxRow) -> None:
        items = self._prepare(conn, [row])
        if not items:
            return
        (item,) = items
        if not self._rate_limit(conn):
            return
        if self._attempt(conn, item):
            self._delivered(conn, items, digest=False)

    def _attempt(
        self, conn: StateConnection, item: _Item, before_failure: Callable[[], None] | None = None
    ) -> bool:
        """Send one row; True when it was delivered (not yet recorded), else its
        failure is recorded (retry or dead letter; ``before_failure`` called first)
        and False returned."""
        items = [item]
        try:
            members = item.record.members
            if len(members) == 1:
                self._send(self.notifier.render(members[0]), item.row.alert_id)
            elif self.notifier.supports_digest():
                # A baseline digest (one outbox row for a host's new rows).
                body = self.notifier.render_digest(members)
                if body is None:
                    raise NotifyError(
                        f"{self.name}: no digest format", retryable=False, error_type="internal"
                    )
                self._send(body, item.row.alert_id)
            else:
                # No digest format: every row goes out on its own, each with its own
                # idempotency key, so a retry after a partial send repeats nothing new.
                for member in members:
                    self._send(self.notifier.render(member), member.id)
        except NotifyError as err:
            if before_failure is not None:
                before_failure()
            self._failed(conn, items, err)
        except Exception as err:  # a bad row or a notifier bug: stop retrying it
            if before_failure is not None:
                before_failure()
            exhausted = _exhaustion_error(self.name, err)
            if exhausted is not None:
                self._failed(conn, items, exhausted)
            else:
                self._dead(conn, items, f"internal: {type(err).__name__}: {err}")
        else:
            return True
        return False

    def _deliver_digest(self, conn: StateConnection, rows: Sequence[OutboxRow]) -> None:
        items = self._prepare(conn, rows)
        if len(items) < 2:
            for item in items:
                self._deliver_one(conn, item.row)
            return
        if not self._rate_limit(conn):
            return
        ids = sorted(f"{i.row.alert_id}/{i.row.rule}" for i in items)
        digest_id = "digest-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        try:
            body = self.notifier.render_digest([i.record.alert for i in items])
            if body is None:
                # These alerts do not fold into one message (too large for the
                # destination): each goes on its own, none is lost to the digest.
                for item in items:
                    if self.stop_event.is_set() or self.paused_until is not None:
                        break
                    self._deliver_one(conn, item.row)
                return
            self._send(body, digest_id)
        except NotifyError as err:
            self._failed(conn, items, err, digest_id=digest_id)
        except Exception as err:  # a bad row or a notifier bug
            exhausted = _exhaustion_error(self.name, err)
            if exhausted is not None:
                self._failed(conn, items, exhausted, digest_id=digest_id)
            else:
                self._dead(conn, items, f"internal: {type(err).__name__}: {err}")
        else:
            self._delivered(conn, items, digest=True, digest_id=digest_id)

    # -- outcomes ---------------------------------------------------------------

    def _delivered(
        self, conn: StateConnection, items: Sequence[_Item], *, digest: bool, digest_id: str = ""
    ) -> None:
        now = self.clock.time()
        silences = {i.key: now + i.window_secs for i in items if i.window_secs > 0}
        mark_sent(conn, [i.row for i in items], now, silences)
        self.consecutive_failures = 0
        self.last_success_at = now
        self._count(self.metrics.sent, "sent", len(items))
        if digest:
            self._count(self.metrics.digests, "digests", 1)
            log_event(
                _log,
                logging.INFO,
                "notify_digest_sent",
                notifier=self.name,
                digest_id=digest_id,
                alerts=len(items),
            )
        else:
            for item in items:
                log_event(
                    _log,
                    logging.INFO,
                    "notify_sent",
                    notifier=self.name,
                    alert_id=item.row.alert_id,
                    rule=item.row.rule,
                    attempts=item.row.attempts + 1,
                )

    def _count(self, metric: Counter, counted: _Counted, n: int) -> None:
        """Add ``n`` to this destination's ``metric`` and to ``stats.<counted>``.

        Args:
            metric: a counter of :attr:`metrics` labelled by destination.
            counted: the matching :class:`~alert_service.stats.Stats` field, updated
                under :attr:`stats_lock` (the workers share ``stats``).
            n: how many, at least 0.
        """
        metric.labels(self.name).inc(n)
        with self.stats_lock:
            setattr(self.stats, counted, getattr(self.stats, counted) + n)

    def _dead(self, conn: StateConnection, items: Sequence[_Item], reason: str) -> None:
        mark_dead(conn, [i.row for i in items], reason)
        self.last_error = reason
        self._count(self.metrics.dead_lettered, "failed", len(items))
        for item in items:
            log_event(
                _log,
                logging.ERROR,
                "notify_dead_lettered",
                notifier=self.name,
                alert_id=item.row.alert_id,
                rule=item.row.rule,
                attempts=item.row.attempts + 1,
                reason=reason,
            )

    def _failed(
        self,
        conn: StateConnection,
        items: Sequence[_Item],
        err: NotifyError,
        *,
        digest_id: str = "",
    ) -> None:
        now = self.clock.time()
        reason = str(err)
        self.last_error = reason
        if not err.retryable:
            self._dead(conn, items, reason)
            return
        policy = self.policy
        give_up = [
            i
            for i in items
            if (policy.max_attempts and i.row.attempts + 1 >= policy.max_attempts)
            or now - i.row.created_at >= policy.max_age_secs
        ]
        if give_up:
            self._dead(conn, give_up, f"gave up: {reason}")
        retry = [i for i in items if i not in give_up]
        server_wait = (
            min(err.retry_after_secs, policy.max_retry_after_secs)
            if err.retry_after_secs is not None
            else 0.0
        )
        pause = max(backoff_secs(policy, self.consecutive_failures, rng=self.rng), server_wait)
        self.consecutive_failures += 1
        self.paused_until = now + pause
        if not retry:
            return
        attempts = max(i.row.attempts for i in retry)
        row_wait = max(backoff_secs(policy, attempts, rng=self.rng), server_wait)
        mark_retry(conn, [i.row for i in retry], now + row_wait, reason)
        self._count(self.metrics.retried, "retries", len(retry))
        log_event(
            _log,
            logging.WARNING,
            "notify_retrying",
            notifier=self.name,
            alert_id=digest_id or retry[0].row.alert_id,
            alerts=len(retry),
            attempts=attempts + 1,
            error_type=err.error_type,
            reason=reason,
            # The row is due after its own backoff, but the whole destination waits
            # out its pause first: the row is tried again after the longer of the two
            # at the earliest.
            retry_in_secs=round(max(row_wait, pause), 3),
            row_backoff_secs=round(row_wait, 3),
            destination_pause_secs=round(pause, 3),
            retry_after_secs=err.retry_after_secs,
        )
