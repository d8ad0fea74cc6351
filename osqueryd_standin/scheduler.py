"""The query scheduler of the osqueryd stand-in (a test double, not osquery).

(Upstream osquery 5.23 osquery/dispatcher/scheduler.cpp SchedulerRunner::start, launchQuery.)

The scheduler ticks once a second with ``i`` starting at the current unix
time and incremented per tick (sleep compensated for the time spent, drift
capped at 60 s, as osqueryd does). A query runs when
``i % splayed_interval == 0`` — so runs are aligned to the wall clock — or on
the first tick when it has ``startup_priority``. Packs run only while their
discovery queries pass (re-checked every ``pack_refresh_interval``).

One run (launchQuery): execute the SQL; snapshot queries log every row
unescaped to ``osqueryd.snapshots.log``; otherwise values are escaped,
diffed against the stored run, ``removed: false`` drops the removed rows
(the counter still bumps), and lines go to ``osqueryd.results.log`` unless
there is nothing to say (a first run with no rows still writes an empty
batch line in batch format).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from osqueryd_standin.differential import DiffStore
from osqueryd_standin.errors import StandinQueryError
from osqueryd_standin.packs import Pack, ScheduledQuery
from osqueryd_standin.results_log import (
    LogFormat,
    ResultsLogWriter,
    format_differential,
    format_snapshot,
)
from osqueryd_standin.sqlengine import SqlEngine, TypedRow
from osqueryd_standin.values import escape_non_printable

__all__ = ["Scheduler"]

log = logging.getLogger("osqueryd_standin.scheduler")

_MAX_DRIFT_SECS = 60.0


def _escape_row(row: TypedRow) -> TypedRow:
    return {k: escape_non_printable(v) if isinstance(v, str) else v for k, v in row.items()}


class Scheduler:
    """Runs pack queries on schedule and logs their results.

    Args:
        engine: runs the SQL.
        store: differential state.
        writer: result log files.
        log_format: line format flags.
        clock: unix time in seconds (injectable for tests).
    """

    def __init__(
        self,
        engine: SqlEngine,
        store: DiffStore,
        writer: ResultsLogWriter,
        log_format: LogFormat,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._store = store
        self._writer = writer
        self._format = log_format
        self._clock = clock
        self._packs: dict[str, Pack] = {}
        self._packs_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._first_runs: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Packs ---------------------------------------------------------------
    def add_pack(self, pack: Pack) -> None:
        """Add or replace a pack (by name)."""
        with self._packs_lock:
            self._packs[pack.name] = pack

    def remove_pack(self, name: str) -> None:
        """Remove a pack if present."""
        with self._packs_lock:
            self._packs.pop(name, None)

    def packs(self) -> list[Pack]:
        """The packs, sorted by name."""
        with self._packs_lock:
            return [self._packs[k] for k in sorted(self._packs)]

    def _count_rows(self, sql: str) -> int:
        return len(self._engine.query(sql))

    def _active_queries(self) -> list[ScheduledQuery]:
        now = self._clock()
        queries: list[ScheduledQuery] = []
        for pack in self.packs():
            if pack.should_execute(now, self._count_rows):
                queries.extend(pack.queries)
        return queries

    # Running -------------------------------------------------------------
    def launch_query(self, query: ScheduledQuery) -> bool:
        """Run one scheduled query and log its results.

        Returns:
            False when the SQL failed ("Error executing scheduled query").
        """
        with self._run_lock:
            return self._launch(query)

    def _launch(self, query: ScheduledQuery) -> bool:
        name = query.logged_name
        log.debug("Executing scheduled query %s: %s", name, query.sql)
        try:
            rows = self._engine.query(query.sql)
        except StandinQueryError as exc:
            log.error("Error executing scheduled query %s: %s", name, exc.message)
            return False
        unix_time = int(self._clock())
        if query.snapshot:
            self._writer.write_snapshots(format_snapshot(self._format, name, unix_time, rows))
            return True
        escaped = [_escape_row(r) for r in rows]
        diff, counter = self._store.add_new_results(name, escaped, self._format.epoch)
        if counter is None:
            return True
        if not query.removed:
            diff.removed = []
        if diff.has_no_results() and counter != 0:
            return True
        self._writer.write_results(
            format_differential(self._format, name, unix_time, counter, diff)
        )
        return True

    def run_once(self, query_name: str | None = None) -> int:
        """Run queries now, regardless of their interval.

        Args:
            query_name: a logged name ("pack_p_q") or a query key ("q"); None
                runs every query of every pack whose discovery passes.

        Returns:
            How many queries ran.
        """
        ran = 0
        for query in self._active_queries():
            if query_name is None or query_name in (query.logged_name, query.query_name):
                self.launch_query(query)
                ran += 1
        return ran

    def tick(self, step: int) -> None:
        """Run what is due at scheduler step ``step`` (a unix second)."""
        for query in self._active_queries():
            first = query.logged_name not in self._first_runs
            due = query.splayed_interval > 0 and step % query.splayed_interval == 0
            if due or (query.startup_priority is not None and first):
                self._first_runs.add(query.logged_name)
                self.launch_query(query)

    # Thread --------------------------------------------------------------
    def start(self) -> None:
        """Start the once-a-second scheduler thread."""
        self._thread = threading.Thread(target=self._run, name="standin-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_secs: float = 30.0) -> None:
        """Stop the thread after the run in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_secs)

    def _run(self) -> None:
        step = int(self._clock())
        drift = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.tick(step)
            except Exception:
                log.exception("Scheduler step %d failed", step)
            step += 1
            elapsed = time.monotonic() - started
            if elapsed + drift < 1.0:
                self._stop.wait(1.0 - elapsed - drift)
                drift = 0.0
            else:
                drift += elapsed - 1.0
                if drift > _MAX_DRIFT_SECS:
                    drift = 0.0
