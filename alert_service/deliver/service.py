"""The delivery service: one worker per destination, plus outbox upkeep.

:class:`DeliveryService` starts a :class:`~alert_service.deliver.worker.DestinationWorker`
thread per configured notifier and a housekeeping thread that deletes finished outbox
rows after ``retention_secs`` and expired silences. It also answers the queue probe of
the metrics (pending rows and oldest age per destination) and ``/health``.

The pipeline never waits for it: it only inserts rows (``enqueue_alerts``) in its own
transaction; the workers find them by polling every ``poll_interval_secs``.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from alert_service.deliver.clock import Clock, SystemClock
from alert_service.deliver.retry import RetryPolicy
from alert_service.deliver.settings import DestinationSettings
from alert_service.deliver.worker import DestinationWorker
from alert_service.logs import log_event
from alert_service.notify import DEFAULT_REGISTRY, NotifierRegistry
from alert_service.notify.base import Notifier
from alert_service.ops.metrics import ServiceMetrics
from alert_service.state.db import StateConnection, StateTarget, open_state
from alert_service.state.outbox import QueueDepth, purge, queue_depths
from alert_service.stats import Stats


class DestinationConfig(Protocol):
    """One ``notifiers`` item as this stage reads it
    (:class:`~alert_service.config.NotifierConfig` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


class DeliveryConfig(Protocol):
    """What this stage reads of the configuration (:class:`~alert_service.config.Config`
    is one): the destinations and the ``delivery`` section, nothing else."""

    @property
    def notifiers(self) -> Sequence[DestinationConfig]: ...

    @property
    def delivery(self) -> RetryPolicy: ...


__all__ = [
    "HOUSEKEEPING_INTERVAL_SECS",
    "DeliveryConfig",
    "DeliveryService",
    "DestinationConfig",
    "build_delivery_service",
]

_log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_SECS = 300.0
"""Clock seconds between two purges of finished rows and expired silences."""


class DeliveryService:
    """Deliver the outbox of one state database to its destinations.

    Args:
        db_path: the state database (``open_state`` path).
        notifiers: notifier name → notifier; one worker each.
        settings: notifier name → rate limit / digest settings (defaults when absent).
        policy: the ``delivery`` section.
        metrics: metrics to update (a new :class:`ServiceMetrics` when None).
        stats: counters shared with the pipeline (a new :class:`Stats` when None).
        stats_lock: lock guarding ``stats`` against the worker threads.
        clock: time and sleeps (default the wall clock).
        rng: jitter source.
        batch_rows: rows each worker claims, sends and records together (default 20;
            1 = a claim and a commit per row).
    """

    def __init__(
        self,
        db_path: StateTarget,
        notifiers: Mapping[str, Notifier],
        settings: Mapping[str, DestinationSettings],
        policy: RetryPolicy,
        *,
        metrics: ServiceMetrics | None = None,
        stats: Stats | None = None,
        stats_lock: threading.Lock | None = None,
        clock: Clock | None = None,
        rng: Callable[[], float] = random.random,
        batch_rows: int = 20,
    ) -> None:
        self.db_path = db_path
        self.policy = policy
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.stats = stats if stats is not None else Stats()
        self.stats_lock = stats_lock if stats_lock is not None else threading.Lock()
        self.metrics = (
            metrics if metrics is not None else ServiceMetrics(self.stats, self.stats_lock)
        )
        self.workers = {
            name: DestinationWorker(
                notifier,
                db_path,
                policy,
                settings.get(name, DestinationSettings()),
                metrics=self.metrics,
                stats=self.stats,
                stats_lock=self.stats_lock,
                clock=self.clock,
                rng=rng,
                batch_rows=batch_rows,
            )
            for name, notifier in notifiers.items()
        }
        self._probe_conn: StateConnection | None = None
        self._probe_lock = threading.Lock()
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        self.metrics.watch_queue(self.queue_depths, self.workers, self.clock.time)
        self.metrics.watch_stalls(self.stalled_secs, policy.stalled_after_secs)

    def start(self) -> None:
        """Start every worker and the housekeeping thread; warn about orphaned rows."""
        orphans = {d: q.pending for d, q in self.queue_depths().items() if d not in self.workers}
        for destination, pending in sorted(orphans.items()):
            log_event(
                _log,
                logging.WARNING,
                "outbox_unknown_destination",
                notifier=destination,
                pending=pending,
                reason="no notifier of that name is configured; its rows stay pending",
            )
        for worker in self.workers.values():
            worker.start()
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="deliver-housekeeping", daemon=True
        )
        self._housekeeper.start()

    def stop(self, timeout_secs: float = 10.0) -> bool:
        """Stop the threads (a request in flight finishes first); return True when all ended.

        Args:
            timeout_secs: how long to wait for each thread, real seconds.
        """
        self._stop.set()
        for worker in self.workers.values():
            worker.stop()
        ended = all(worker.join(timeout_secs) for worker in self.workers.values())
        if self._housekeeper is not None:
            self._housekeeper.join(timeout_secs)
        with self._probe_lock:
            if self._probe_conn is not None:
                self._probe_conn.close()
                self._probe_conn = None
        return ended

    def queue_depths(self) -> dict[str, QueueDepth]:
        """Pending rows and oldest ``created_at`` per destination (own connection)."""
        with self._probe_lock:
            if self._probe_conn is None:
                self._probe_conn = open_state(self.db_path)
            return queue_depths(self._probe_conn)

    def stalled_secs(
        self, depths: Mapping[str, QueueDepth] | None = None, now: float | None = None
    ) -> dict[str, float]:
        """Seconds each destination has had pending rows and delivered nothing.

        Per destination: 0 when nothing is pending, else ``now`` less the latest of its
        last success, its worker's start and its oldest pending row's ``created_at``
        (a row queued a moment ago has not waited, however old the last success).

        Args:
            depths: queue depths (read now when None).
            now: clock time (the delivery clock when None).
        """
        depths = self.queue_depths() if depths is None else depths
        now = self.clock.time() if now is None else now
        out: dict[str, float] = {}
        for name, worker in self.workers.items():
            depth = depths.get(name, QueueDepth(0, None))
            h = worker.health()
            if not depth.pending:
                out[name] = 0.0
                continue
            since = max(
                h.last_success_at if h.last_success_at is not None else h.started_at,
                h.started_at,
                depth.oldest_created_at if depth.oldest_created_at is not None else h.started_at,
            )
            out[name] = max(0.0, now - since)
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Return ``(healthy, document)`` for ``/health``.

        Healthy means every worker thread runs. The document lists, per destination,
        ``alive``, ``pending``, ``oldest_pending_age_seconds``, ``consecutive_failures``,
        ``paused_until``, ``last_success_at``, ``last_error``, ``stalled_seconds``
        (:meth:`stalled_secs`) and ``stalled`` (more than the ``delivery`` section's
        ``stalled_after_secs``: pending alerts and no delivery); ``source_problems``
        maps each configured source that cannot be read now to why
        (``Stats.source_problems``: ``"missing: no such file"``...);
        ``rule_columns_missing`` lists ``{"query", "column", "rules"}`` for each column
        a query's rows lack that enabled rules need (``Stats.rule_columns_missing``).
        ``status`` is ``ok``, ``degraded`` (a destination is failing or stalled, a
        source is missing or unreadable, or a needed column is missing) or ``failing``
        (a worker is dead); when not ``ok``, ``reason`` says why in one line. Degraded
        is still healthy (HTTP 200).
        With stream sources, ``streams`` shows ``partitions_owned``, ``leases``
        (consumer → ``"token N"`` or ``"local"``) and ``pending_messages`` (consumer →
        messages not yet delivered to it: the consumer lag).
        """
        try:
            depths = self.queue_depths()
        except sqlite3.Error as err:
            return False, {"status": "failing", "reason": f"state database: {err}"}
        now = self.clock.time()
        stalled = self.stalled_secs(depths, now)
        limit = self.policy.stalled_after_secs
        destinations: dict[str, Any] = {}
        for name, worker in sorted(self.workers.items()):
            h = worker.health()
            depth = depths.get(name, QueueDepth(0, None))
            destinations[name] = {
                "alive": h.alive,
                "pending": depth.pending,
                "oldest_pending_age_seconds": (
                    0.0
                    if depth.oldest_created_at is None
                    else round(max(0.0, now - depth.oldest_created_at), 3)
                ),
                "consecutive_failures": h.consecutive_failures,
                "paused_until": h.paused_until,
                "last_success_at": h.last_success_at,
                "last_error": h.last_error,
                "stalled_seconds": round(stalled[name], 3),
                "stalled": stalled[name] > limit,
            }
        sources = dict(self.stats.source_problems)  # replaced whole by the pipeline
        reasons = [
            f"destination {name}: worker stopped"
            for name, d in destinations.items()
            if not d["alive"]
        ]
        reasons += [
            f"destination {name}: {d['consecutive_failures']} consecutive failures"
            for name, d in destinations.items()
            if d["alive"] and d["consecutive_failures"]
        ]
        reasons += [
            f"destination {name}: {d['pending']} pending, nothing delivered for "
            f"{d['stalled_seconds']:.0f} s"
            for name, d in destinations.items()
            if d["alive"] and d["stalled"]
        ]
        reasons += [f"source {path}: {problem}" for path, problem in sorted(sources.items())]
        columns = self.stats.rule_columns_missing  # replaced whole by the pipeline
        reasons += [
            f"query {query}: no {column!r} in its rows, needed by rules {', '.join(rules)}"
            for (query, column), rules in sorted(columns.items())
        ]
        alive = all(d["alive"] for d in destinations.values())
        status = "failing" if not alive else "degraded" if reasons else "ok"
        doc: dict[str, Any] = {"status": status}
        if reasons:
            doc["reason"] = "; ".join(reasons)
        doc["destinations"] = destinations
        doc["source_problems"] = sources
        doc["rule_columns_missing"] = [
            {"query": query, "column": column, "rules": list(rules)}
            for (query, column), rules in sorted(columns.items())
        ]
        leases = dict(self.stats.source_leases)  # replaced whole by the pipeline
        if leases or self.stats.source_pending_messages:
            doc["streams"] = {
                "partitions_owned": len(leases),
                "leases": leases,
                "pending_messages": dict(self.stats.source_pending_messages),
            }
        return alive, doc

    def _housekeeping(self) -> None:
        conn: StateConnection | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None:
                        conn = open_state(self.db_path)
                    rows, silences = purge(conn, self.clock.time(), self.policy.retention_secs)
                    if rows or silences:
                        log_event(
                            _log,
                            logging.INFO,
                            "outbox_purged",
                            rows=rows,
                            silences=silences,
                        )
                except sqlite3.Error as err:
                    log_event(_log, logging.ERROR, "outbox_purge_failed", reason=str(err))
                self.clock.wait(self._stop, HOUSEKEEPING_INTERVAL_SECS)
        finally:
            if conn is not None:
                conn.close()


def build_delivery_service(
    config: DeliveryConfig,
    db_path: StateTarget,
    *,
    registry: NotifierRegistry = DEFAULT_REGISTRY,
    notifiers: Mapping[str, Notifier] | None = None,
    **kwargs: Any,
) -> DeliveryService:
    """Create the :class:`DeliveryService` of a validated configuration.

    Args:
        config: the configuration (notifiers, ``delivery``).
        db_path: the state database.
        registry: notifier types.
        notifiers: already built notifiers by name (built from ``config`` when None).
        **kwargs: passed to :class:`DeliveryService` (``metrics``, ``stats``,
            ``stats_lock``, ``clock``, ``rng``).
    """
    built = (
        dict(notifiers)
        if notifiers is not None
        else {n.name: registry.create(n.name, n.type, n.options) for n in config.notifiers}
    )
    settings = {
        n.name: DestinationSettings.for_notifier(registry.get(n.type), n.options)
        for n in config.notifiers
    }
    return DeliveryService(
        db_path,
        built,
        settings,
        config.delivery,
        **kwargs,
    )
