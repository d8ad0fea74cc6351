"""Token bucket: the per-destination rate limit of the delivery workers.

Each request takes one token; tokens refill at ``rate_per_minute / 60`` per second up to
``burst``. Slack allows about one message per second per incoming webhook with short
bursts (Slack API docs, "Rate limits"), PagerDuty about 120 events per minute per
integration key (PagerDuty Events API v2 docs, "Rate Limits"): the notifiers'
defaults follow.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """A token bucket on an injectable clock.

    Args:
        rate_per_minute: refill rate, tokens per minute (> 0).
        burst: bucket size, tokens (>= 1); the bucket starts full.
        clock: current time in seconds.

    Raises:
        ValueError: a non-positive rate or a burst below 1.
    """

    def __init__(self, rate_per_minute: float, burst: int, clock: Callable[[], float]) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError(f"invalid rate limit {rate_per_minute}/min, burst {burst}")
        self.rate_per_sec = rate_per_minute / 60.0
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_sec)
        self._updated = now

    def wait_secs(self) -> float:
        """Seconds until a token is available (0 when one is available now)."""
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate_per_sec

    def take(self) -> bool:
        """Take a token if one is available; return whether one was taken."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
