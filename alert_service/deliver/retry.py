"""Retry policy (the ``delivery`` config section) and the backoff it implies.

:class:`RetryPolicy` and :func:`backoff_secs` are used by the durable outbox workers
(:mod:`alert_service.deliver`, the only delivery path: retries survive restarts).
Backoff is capped exponential with "full jitter" (AWS Architecture Blog, "Exponential
Backoff And Jitter", 2015): sleep uniformly in
``[0, min(max_backoff_secs, initial_backoff_secs * 2**n)]``; the worker waits at least
the server's ``Retry-After`` (RFC 9110 §10.2.3, capped at ``max_retry_after_secs``)
on top.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["RetryPolicy", "backoff_secs"]


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
        stalled_after_secs: a destination that has pending rows and has delivered
            nothing for this long (since its last success, its start, or its oldest
            pending row was queued, whichever is latest) is reported stalled, seconds
            (default 5 minutes).
    """

    max_attempts: int = 0
    initial_backoff_secs: float = 0.5
    max_backoff_secs: float = 60.0
    max_age_secs: float = 86400.0
    max_retry_after_secs: float = 3600.0
    dedup_window_secs: float = 3600.0
    poll_interval_secs: float = 0.25
    retention_secs: float = 604800.0
    stalled_after_secs: float = 300.0

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
    policy: RetryPolicy, retry_number: int, rng: Callable[[], float] = random.random
) -> float:
    """Return the wait before retry ``retry_number`` (0 for the first retry), seconds.

    Full jitter: uniform in ``[0, min(max_backoff_secs, initial_backoff_secs * 2**n)]``.

    Args:
        policy: the ``delivery`` settings.
        retry_number: failures so far (a row's attempts, or a destination's
            consecutive failures), 0 for the first retry.
        rng: uniform [0, 1) source for the jitter.
    """
    cap = min(
        policy.max_backoff_secs, math.ldexp(policy.initial_backoff_secs, min(retry_number, 60))
    )
    return rng() * cap
