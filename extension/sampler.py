"""The background sampler between osquery's queries, and the event reader beside it.

Every ``sample_interval_ms`` milliseconds it collects the host's sockets,
refreshes the process tracker and merges the sample into the connection
tracker. Where a kernel event source runs (Linux, root), a second thread
reads its flow events as they come and merges them too: the events catch
what lives between two samples, the samples stay the source of truth for
listeners and long-lived connections and make up for lost events.

``generate`` serves the tracker's table without waiting for a scan, as long
as the last good sample is fresh (younger than ``stale_secs``).
When it is not, ``generate`` samples synchronously; when that fails too it
raises, so osqueryd gets an error status instead of an empty table (which a
differential query would log as a flood of ``removed`` rows).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from extension.collect import CollectError, Collector
from extension.collect.dns_capture import DnsCapture, DnsStats
from extension.collect.linux_events import EventStats
from extension.enrich.connections import DEFAULT_ATTEMPT_GRACE_SECS, ConnectionTracker, Row
from extension.enrich.process import ProcessTracker
from extension.enrich.saved import RowStore
from extension.model import FlowEvent

__all__ = ["EventSource", "Sampler", "SamplerStats"]

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_INTERVAL_MS = 250
"""Milliseconds between samples when the sampler works alone."""
DEFAULT_EVENTS_SAMPLE_INTERVAL_MS = 3000
"""Milliseconds between samples when kernel events run beside the sampler
(see docs/extension.md for the measurements behind it)."""
DEFAULT_LINGER_SECS = 6.0
EVENTS_WAIT_SECS = 0.05
"""Longest wait for kernel events before reading what the rings hold."""
SAVE_EVERY_SECS = 5.0
"""Shortest time between two saves of the served rows (when they changed)."""
TIME_WAIT_EVERY = 8
"""Samples read TIME_WAIT sockets once in this many (see Sampler._skip_time_wait)."""
MAX_PENDING_FLOWS = 100_000
"""Flow events kept while the tracker is busy before the reader waits for it."""


class EventSource(Protocol):
    """A push source of flow events (extension.collect.linux_events.LinuxEventSource)."""

    def wait(self, timeout_secs: float) -> list[FlowEvent]:
        """Flows new or changed since the last call, waiting up to ``timeout_secs``."""
        ...

    def stop(self) -> None:
        """Release the source."""
        ...

    def stats(self) -> EventStats:
        """Its counters."""
        ...

    @property
    def through(self) -> float:
        """Seconds since the Unix epoch up to which every event has been read."""
        ...
_WARN_EVERY_SECS = 600.0


@dataclass(frozen=True, slots=True)
class SamplerStats:
    """Health of the sampler, as the ``tracked_connections_stats`` table shows it.

    Attributes:
        samples_taken: samples completed since start.
        sample_errors: samples that failed.
        last_sample_ms: duration of the last sample, milliseconds.
        max_sample_ms: longest sample, milliseconds.
        last_sample_time: end of the last good sample, seconds since the Unix epoch.
        connections_tracked: rows in the table, open or lingering.
        connections_lingering: closed connections still in the table.
        connections_evicted: closed connections dropped early by the cap.
        processes_cached: running processes whose details are cached.
        processes_exited: exited processes still remembered.
        processes_skipped: failed process reads by reason.
        access_denied_pids: pids whose sockets could not be read (no privilege).
        last_error: the last sampling error, '' when none.
        source: 'events+sampling' while kernel events run, else 'sampling'.
        events: the event source's counters (its ``reason`` says why events
            are off), or None when no event source was tried.
        events_reason: why kernel events are off, '' while they run.
        state_file: where served rows are saved, '' when they are not.
        state_error: why they could not be saved or read, '' when fine.
        rows_revived: connections that got back their row after a restart.
        dns: the DNS answer capture's counters, or None when it was not tried.
    """

    samples_taken: int
    sample_errors: int
    last_sample_ms: float
    max_sample_ms: float
    last_sample_time: float
    connections_tracked: int
    connections_lingering: int
    connections_evicted: int
    processes_cached: int
    processes_exited: int
    processes_skipped: dict[str, int]
    access_denied_pids: int
    last_error: str
    source: str = "sampling"
    events: EventStats | None = None
    events_reason: str = ""
    state_file: str = ""
    state_error: str = ""
    rows_revived: int = 0
    dns: DnsStats | None = None


class Sampler:
    """Samples the host in a background thread and serves the merged table.

    Args:
        collector: socket source.
        processes: process tracker, refreshed every sample.
        sample_interval_ms: milliseconds between samples.
        linger_secs: seconds a closed connection stays in the table.
        clock: wall clock, seconds since the Unix epoch (injectable for tests).

    Keyword-only args:
        events: a started kernel event source, read in a thread of its own;
            None to sample alone.
        events_reason: why there is no event source (for the stats table).
        attempt_grace_secs: seconds a connection attempt waits for its outcome
            before its row is served.
        store: where served rows are saved, so that connections living
            through a restart keep their rows; None to save nothing.
        dns: a started DNS answer capture, whose names the rows get; None
            for no names.
    """

    def __init__(
        self,
        collector: Collector,
        processes: ProcessTracker | None = None,
        sample_interval_ms: int = DEFAULT_SAMPLE_INTERVAL_MS,
        linger_secs: float = DEFAULT_LINGER_SECS,
        clock: Callable[[], float] = time.time,
        *,
        events: EventSource | None = None,
        events_reason: str = "",
        attempt_grace_secs: float = DEFAULT_ATTEMPT_GRACE_SECS,
        store: RowStore | None = None,
        dns: DnsCapture | None = None,
    ) -> None:
        self._collector = collector
        self._store = store
        self._saved_version = -1
        self._saved_at = 0.0
        self._processes = processes or ProcessTracker()
        self._tracker = ConnectionTracker(
            self._processes.lookup,
            linger_secs=linger_secs,
            attempt_grace_secs=attempt_grace_secs,
            holders=getattr(collector, "holders", None),
            names=dns.names if dns is not None else None,
        )
        self._dns = dns
        self._events = events
        self._events_reason = events_reason
        self._events_thread: threading.Thread | None = None
        self._events_lost = 0
        self.interval_secs = max(sample_interval_ms, 10) / 1000.0
        self.stale_secs = max(2 * self.interval_secs, 1.0)
        self._clock = clock
        # One sample at a time (collectors are not thread-safe); the tracker
        # and the counters under their own lock, held only to merge, so that
        # the event reader keeps draining the kernel's rings while a slow
        # sample (a first full scan, say) lists the sockets.
        self._collect_lock = threading.Lock()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._pending: list[FlowEvent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._samples = 0
        self._errors = 0
        self._last_ms = 0.0
        self._max_ms = 0.0
        self._last_good = 0.0
        self._last_error = ""
        self._last_warning = -_WARN_EVERY_SECS

    def start(self) -> None:
        """Take back saved rows, take a first sample now, then work in the background.

        The first sample comes before the first event is read, so that the
        rows saved before a restart are matched to their sockets first (the
        kernel keeps the events in its rings meanwhile). Sampling errors are
        recorded, not raised.
        """
        if self._store is not None:
            saved = self._store.load()
            if saved:
                with self._lock:
                    self._tracker.restore(saved, self._clock())
                log.info("%d rows saved before the restart taken back", len(saved))
        with contextlib.suppress(CollectError):
            self.sample_once()
        if self._events is not None:
            self._events_thread = threading.Thread(
                target=self._read_events, name="events", daemon=True
            )
            self._events_thread.start()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background threads and the event source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._events_thread is not None:
            self._events_thread.join(timeout=5)
        if self._events is not None:
            self._events.stop()
        if self._dns is not None:
            self._dns.stop()
        self.save(force=True)

    def save(self, force: bool = False) -> None:
        """Save the served rows when they changed (at most every SAVE_EVERY_SECS)."""
        if self._store is None:
            return
        # One save at a time, so that the rows taken last are written last
        # (stop() saves while a sampling thread that outlived its join may be
        # saving too); the sampler's lock only while the rows are taken.
        with self._save_lock:
            now = time.monotonic()
            with self._lock:
                version = self._tracker.version
                if version == self._saved_version or (not force and now - self._saved_at < (
                        SAVE_EVERY_SECS)):  # fmt: skip
                    return
                rows = self._tracker.saved_rows_later()
            if self._store.save(rows()):  # decoded with the lock let go
                self._saved_version, self._saved_at = version, now

    def read_events_once(self, timeout_secs: float = 0.0) -> int:
        """Read the event source once and merge what it reports.

        Returns:
            the number of flow events merged (0 without an event source).
        """
        if self._events is None:
            return 0
        self._pending += self._events.wait(timeout_secs)
        through = self._events.through
        if not self._pending:
            with self._lock:
                self._tracker.events_through = through
            return 0
        # While the tracker is busy, keep the flows and read on; wait for it
        # only when that many are waiting.
        if not self._lock.acquire(blocking=len(self._pending) >= MAX_PENDING_FLOWS):
            return 0
        try:
            flows, self._pending = self._pending, []
            self._tracker.observe(flows, self._clock())
            self._tracker.events_through = through
        finally:
            self._lock.release()
        return len(flows)

    def _read_events(self) -> None:
        while not self._stop.is_set():
            try:
                self.read_events_once(EVENTS_WAIT_SECS)
            except Exception:
                # One bad read must not end event reading; the sampler goes on regardless.
                log.exception("unexpected error while reading kernel events")
                self._stop.wait(1.0)

    def sample_once(self) -> None:
        """Collect, refresh processes and merge one sample.

        Raises:
            CollectError: the socket list could not be read; the table keeps
                the previous sample.
        """
        with self._collect_lock:
            started = time.perf_counter()
            began = self._clock()
            self._skip_time_wait()
            try:
                self._processes.refresh()
                records = self._collector.collect()
            except CollectError as err:
                with self._lock:
                    self._errors += 1
                    self._last_error = str(err)
                log.error("sample failed: %s", err)
                raise
            with self._lock:
                now = self._clock()
                unlisted = getattr(self._collector, "time_wait_unlisted", None)
                self._tracker.update(records, now, started=began, time_wait_unlisted=unlisted)
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                self._samples += 1
                self._last_ms = elapsed_ms
                self._max_ms = max(self._max_ms, elapsed_ms)
                self._last_good = now
        self._warn_if_unprivileged()

    def rows(self) -> list[Row]:
        """The table for ``generate``: list of rows, each ``dict[str, str]``.

        Raises:
            CollectError: no fresh sample could be had.
        """
        if self._clock() - self._last_good > self.stale_secs:
            self.sample_once()
        if self._dns is not None:
            # Answers the kernel holds for us now came before any connection
            # the rows below show for the first time.
            self._dns.drain()
        with self._lock:
            return self._tracker.rows(self._clock())

    def encoded_rows(self, *, stable_only: bool = False) -> tuple[Iterable[bytes], int]:
        """The table for ``generate`` as encoded rows (see ConnectionTracker.encoded_rows;
        ``stable_only``: without ``state`` and ``last_seen``).

        Raises:
            CollectError: no fresh sample could be had.
        """
        if self._clock() - self._last_good > self.stale_secs:
            self.sample_once()
        with self._lock:
            return self._tracker.encoded_rows(self._clock(), stable_only=stable_only)

    def stats(self) -> SamplerStats:
        """A consistent snapshot of the sampler's health."""
        events = self._events.stats() if self._events is not None else None
        dns = self._dns.stats() if self._dns is not None else None
        with self._lock:
            return SamplerStats(
                samples_taken=self._samples,
                sample_errors=self._errors,
                last_sample_ms=self._last_ms,
                max_sample_ms=self._max_ms,
                last_sample_time=self._last_good,
                connections_tracked=self._tracker.tracked,
                connections_lingering=self._tracker.lingering,
                connections_evicted=self._tracker.evicted,
                processes_cached=self._processes.live_count,
                processes_exited=self._processes.exited_count,
                processes_skipped=dict(self._processes.skipped),
                access_denied_pids=int(getattr(self._collector, "access_denied_pids", 0)),
                last_error=self._last_error,
                source="events+sampling" if events is not None and events.running else "sampling",
                events=events,
                events_reason=events.reason if events is not None else self._events_reason,
                state_file=(self._store.path or "") if self._store is not None else "",
                state_error=self._store.error if self._store is not None else "",
                rows_revived=self._tracker.revived,
                dns=dns,
            )

    def _skip_time_wait(self) -> None:
        """Let the collector leave TIME_WAIT out of most samples.

        A TIME_WAIT socket is the ownerless remnant of a closed connection,
        and it stays for 60 s (Linux's TCP_TIMEWAIT_LEN): reading the
        remnants every TIME_WAIT_EVERY-th sample still finds the remnant of
        every connection that lived between two samples, a few samples
        later, and the tracker keeps the remnants' own rows in between. The
        first sample reads them all, and with kernel events so does every
        sample after events were lost.
        """
        if not hasattr(self._collector, "skip_time_wait"):
            return
        skip = self._samples % TIME_WAIT_EVERY != 0
        if self._events is not None:
            lost = self._events.stats().events_lost
            if lost != self._events_lost:
                skip = False
            self._events_lost = lost
        self._collector.skip_time_wait = skip

    def _run(self) -> None:
        while not self._stop.wait(self.interval_secs):
            try:
                self.sample_once()
                self.save()
            except CollectError:
                continue
            except Exception:
                # One bad sample must not end sampling; the next one retries.
                log.exception("unexpected error while sampling")
                with self._lock:
                    self._errors += 1

    def _warn_if_unprivileged(self) -> None:
        denied = int(getattr(self._collector, "access_denied_pids", 0))
        denied += self._processes.skipped.get("access_denied", 0)
        now = time.monotonic()
        if denied and now - self._last_warning >= _WARN_EVERY_SECS:
            self._last_warning = now
            hint = (
                "the OS denies it even to root (a security module or a sandbox)"
                if os.geteuid() == 0
                else "run the extension as root, as osqueryd does, for complete rows"
            )
            log.warning(
                "some processes could not be read (%d access denials so far): their "
                "connections show without some owner details; %s",
                denied,
                hint,
            )
