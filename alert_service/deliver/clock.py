"""Clocks for the delivery workers: real time, or compressed time for tests and demos.

A worker reads the time with :meth:`Clock.time` and sleeps with :meth:`Clock.wait`, so
a test can run minutes of backoff, rate limiting and dedup windows in seconds
(:class:`ScaledClock`) without changing any delay in the configuration.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "ScaledClock", "SystemClock"]


class Clock(Protocol):
    """Time source and sleeper of the delivery workers."""

    def time(self) -> float:
        """Return the current time, Unix seconds."""
        ...

    def wait(self, event: threading.Event, secs: float) -> bool:
        """Sleep ``secs`` clock seconds or until ``event`` is set; return ``event.is_set()``."""
        ...


class SystemClock:
    """Wall-clock time (:func:`time.time`) and real sleeps."""

    def time(self) -> float:
        """Return :func:`time.time`."""
        return time.time()

    def wait(self, event: threading.Event, secs: float) -> bool:
        """Wait on ``event`` for ``secs`` real seconds."""
        return event.wait(max(0.0, secs))


class ScaledClock:
    """Time that runs ``factor`` times faster than the wall clock from ``origin`` on.

    ``time()`` is ``origin + (time.time() - origin) * factor`` and ``wait(secs)`` sleeps
    ``secs / factor`` real seconds, so every delay is compressed by ``factor``.

    Args:
        factor: speed-up, > 0 (60 makes a minute pass in a second).
        origin: Unix time where both clocks agree (default: now).

    Raises:
        ValueError: ``factor`` is not positive.
    """

    def __init__(self, factor: float, origin: float | None = None) -> None:
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.factor = factor
        self.origin = time.time() if origin is None else origin

    def time(self) -> float:
        """Return the compressed time, Unix seconds."""
        return self.origin + (time.time() - self.origin) * self.factor

    def wait(self, event: threading.Event, secs: float) -> bool:
        """Wait on ``event`` for ``secs / factor`` real seconds."""
        return event.wait(max(0.0, secs) / self.factor)
