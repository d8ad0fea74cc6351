"""Keeping the cyclic garbage collector's full collections short.

CPython's collector (3.11: ``Modules/gcmodule.c``) walks every container
object of the oldest generation in a full collection, holding the
interpreter lock throughout. The extension keeps a few container objects per
tracked connection (its record, the socket record, keys, index lists) and
per process, so with tens of thousands of rows a full collection takes
hundreds of milliseconds, and the kernel event reader cannot drain its rings
meanwhile.

Those objects are long-lived and freed by reference counting: a row holds
no reference back to what holds it. After each sample the young generations
are collected (cheap: only objects made since the last one) and everything
that survived is moved to the collector's permanent generation
(``gc.freeze``), which no collection walks. A frozen object that loses its
last reference is still freed at once. Only cyclic garbage made of frozen
objects would stay, so every ``full_every_secs`` the permanent generation is
put back (``gc.unfreeze``) and collected once in full: the one long pause
left, rare instead of every few seconds.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["DEFAULT_FULL_EVERY_SECS", "HeapSettler"]

DEFAULT_FULL_EVERY_SECS = 600.0
"""Seconds between two full collections of the whole heap."""


class HeapSettler:
    """Freezes what survived each sample; collects the whole heap now and then.

    Not thread-safe: called from the sampler's thread only.

    Args:
        full_every_secs: seconds between full collections of everything,
            frozen objects included (the bound on how long cyclic garbage of
            frozen objects is kept); must be positive.
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        ValueError: ``full_every_secs`` is not positive.
    """

    def __init__(
        self,
        full_every_secs: float = DEFAULT_FULL_EVERY_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if full_every_secs <= 0:
            raise ValueError(f"full_every_secs must be positive, got {full_every_secs}")
        self.full_every_secs = full_every_secs
        self._clock = clock
        self._full_at = clock()
        self.settled = 0
        """Times the heap was frozen."""
        self.full_collections = 0
        """Full collections of the whole heap made here."""

    def settle(self) -> None:
        """Collect the young generations and freeze the survivors; in full when due."""
        now = self._clock()
        if now - self._full_at >= self.full_every_secs:
            self._full_at = now
            gc.unfreeze()
            gc.collect()
            self.full_collections += 1
        else:
            gc.collect(1)
        gc.freeze()
        self.settled += 1

    def release(self) -> None:
        """Put the frozen objects back under the collector (when the extension stops)."""
        gc.unfreeze()
