"""Durable delivery: worker threads that drain the SQLite outbox, one per destination.

Public API:

* :func:`build_delivery_service` / :class:`DeliveryService` — start/stop the workers,
  queue depths and ``/health`` data;
* :class:`DestinationWorker` — one destination's loop (rate limit, digest, dedup,
  retries with capped exponential backoff and full jitter, dead letters);
* :class:`RetryPolicy`, :func:`backoff_secs` — the ``delivery`` section and the
  backoff it implies;
* :class:`DestinationSettings` — per-destination rate limit and digest options;
* :class:`TokenBucket` — the rate limiter;
* :func:`silence_key`, :func:`connection_key` — what counts as a repeat;
* :class:`SystemClock`, :class:`ScaledClock` — real and compressed time.

The pipeline only inserts rows (:func:`alert_service.state.outbox.enqueue_alerts`) in
the transaction that advances its checkpoint; see docs/alert-service.md "Delivery".

The workers, the service and the destination settings (and the notifiers and HTTP
clients they import) are imported on first use of their names here, so a command
that never delivers (``replay``, ``check-config``) does not pay for them at start-up:
the configuration only needs :class:`RetryPolicy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alert_service.deliver.bucket import TokenBucket
from alert_service.deliver.clock import Clock, ScaledClock, SystemClock
from alert_service.deliver.dedup import CONNECTION_KEY_COLUMNS, connection_key, silence_key
from alert_service.deliver.retry import RetryPolicy, backoff_secs
from alert_service.lazy import lazy_getattr

if TYPE_CHECKING:
    from alert_service.deliver.service import DeliveryService, build_delivery_service
    from alert_service.deliver.settings import COMMON_NOTIFIER_OPTIONS, DestinationSettings
    from alert_service.deliver.worker import DestinationWorker, WorkerHealth

_LAZY = {
    "DeliveryService": "alert_service.deliver.service",
    "build_delivery_service": "alert_service.deliver.service",
    "COMMON_NOTIFIER_OPTIONS": "alert_service.deliver.settings",
    "DestinationSettings": "alert_service.deliver.settings",
    "DestinationWorker": "alert_service.deliver.worker",
    "WorkerHealth": "alert_service.deliver.worker",
}

__all__ = [
    "COMMON_NOTIFIER_OPTIONS",
    "CONNECTION_KEY_COLUMNS",
    "Clock",
    "DeliveryService",
    "DestinationSettings",
    "DestinationWorker",
    "RetryPolicy",
    "ScaledClock",
    "SystemClock",
    "TokenBucket",
    "WorkerHealth",
    "backoff_secs",
    "build_delivery_service",
    "connection_key",
    "silence_key",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
