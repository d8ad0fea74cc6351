"""Retry policy (the ``delivery`` config section) and in-process retries.

:class:`RetryPolicy` is shared by the durable outbox workers
(:mod:`alert_service.deliver`, retries that survive restarts) and :func:`deliver`,
which retries one notification in the calling thread.
Backoff follows alerting-delivery-and-tailing.md §2.7: sleep uniformly in
``[0, min(max_backoff_secs, initial_backoff_secs * 2**n)]``, or at least the server's
``Retry-After`` (capped at ``max_backoff_secs``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from alert_service.errors import NotifyError
from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier

__all__ = ["RetryPolicy", "backoff_secs", "deliver"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The ``delivery`` section: retries, backoff, dedup and outbox upkeep.

    Attributes:
        max_attempts: attempts per notification, first one included; 0 (default) = no
            limit, the notification is retried until ``max_age_secs``.
        initial_backoff_secs: backoff cap before the first retry, seconds.
        max_backoff_secs: largest backoff between two attempts, seconds.
        max_age_secs: a notification still failing this long after it was queued is
            dead-lettered at its next failure, seconds (default one day).
        max_retry_after_secs: longest server-requested ``Retry-After`` honoured, seconds.
        dedup_window_secs: after a confirmed delivery, the same (destination, rule,
            host, connection key) is suppressed for this long, seconds; 0 disables.
        poll_interval_secs: how often each destination's worker looks for new rows,
            seconds.
        retention_secs: sent, dead and suppressed rows are deleted this long after they
            were queued, seconds (default 7 days).
    """

    max_attempts: int = 0
    initial_backoff_secs: float = 0.5
    max_backoff_secs: float = 60.0
    max_age_secs: float = 86400.0
    max_retry_after_secs: float = 3600.0
    dedup_window_secs: float = 3600.0
    poll_interval_secs: float = 0.25
    retention_secs: float = 604800.0

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> RetryPolicy:
        """Build from the validated ``delivery`` mapping; absent keys keep the defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in known:
                values[key] = int(value) if key == "max_attempts" else float(value)
        return cls(**values)


def backoff_secs(
    policy: RetryPolicy,
    retry_number: int,
    retry_after_secs: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Return the wait before retry ``retry_number`` (0 for the first retry), seconds.

    Full jitter: uniform in ``[0, min(max_backoff_secs, initial_backoff_secs * 2**n)]``;
    at least ``retry_after_secs`` when given, capped at ``max_backoff_secs``.
    """
    cap = min(
        policy.max_backoff_secs, math.ldexp(policy.initial_backoff_secs, min(retry_number, 60))
    )
    delay = rng() * cap
    if retry_after_secs is not None:
        delay = max(delay, retry_after_secs)
    return min(delay, policy.max_backoff_secs)


def _sleep(secs: float) -> bool:
    time.sleep(secs)
    return False


def deliver(
    notifier: Notifier,
    alert: Alert,
    policy: RetryPolicy,
    *,
    wait: Callable[[float], bool] = _sleep,
    on_retry: Callable[[NotifyError, float], None] | None = None,
    rng: Callable[[], float] = random.random,
) -> int:
    """Render ``alert`` once and send it, retrying retryable failures.

    Args:
        notifier: destination.
        alert: what to send; rendered once, the same payload and id on every attempt.
        policy: attempts and backoff.
        wait: sleeps for the given seconds; returns True when the service is stopping,
            which ends the retries (``threading.Event.wait`` fits).
        on_retry: called with the error and the chosen delay before each retry.
        rng: uniform [0, 1) source for jitter.

    Returns:
        The number of attempts made (1 when the first one succeeded).

    Raises:
        NotifyError: the last error, when an attempt failed with a non-retryable error,
            the attempts ran out, or ``wait`` reported a stop.
    """
    payload = notifier.render(alert)
    attempt = 0
    while True:
        attempt += 1
        try:
            notifier.send(payload, idempotency_key=alert.id)
            return attempt
        except NotifyError as err:
            if not err.retryable or 0 < policy.max_attempts <= attempt:
                raise
            delay = backoff_secs(policy, attempt - 1, err.retry_after_secs, rng)
            if on_retry is not None:
                on_retry(err, delay)
            if wait(delay):
                raise
