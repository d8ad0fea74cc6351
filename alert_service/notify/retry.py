"""Bounded in-process retries with capped exponential backoff and full jitter.

The walking skeleton's delivery guarantee: a few attempts, then give up and count the
failure. The durable SQLite outbox (later) replaces this with retries that survive
restarts; :class:`RetryPolicy` is the ``delivery`` config section both share.
Backoff follows alerting-delivery-and-tailing.md §2.7: sleep uniformly in
``[0, min(max_backoff_secs, initial_backoff_secs * 2**n)]``, or at least the server's
``Retry-After`` (capped at ``max_backoff_secs``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from alert_service.errors import NotifyError
from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier

__all__ = ["RetryPolicy", "backoff_secs", "deliver"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one notification.

    Attributes:
        max_attempts: attempts in total, first one included (1 = no retry).
        initial_backoff_secs: backoff cap before the first retry, seconds.
        max_backoff_secs: largest wait between two attempts, seconds.
    """

    max_attempts: int = 3
    initial_backoff_secs: float = 0.5
    max_backoff_secs: float = 10.0


def backoff_secs(
    policy: RetryPolicy,
    retry_number: int,
    retry_after_secs: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Return the wait before retry ``retry_number`` (0 for the first retry), seconds."""
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
            if not err.retryable or attempt >= policy.max_attempts:
                raise
            delay = backoff_secs(policy, attempt - 1, err.retry_after_secs, rng)
            if on_retry is not None:
                on_retry(err, delay)
            if wait(delay):
                raise
