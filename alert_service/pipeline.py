"""Wire the stages: source → parse → match → baseline → outbox (or a dispatcher).

Two ways through :class:`Pipeline`:

* ``run`` (:meth:`Pipeline.run` / :meth:`Pipeline.poll_once`): follow every configured
  source (:class:`~alert_service.source.FileFollower`), parse and match each line, apply
  the baseline rules (:class:`~alert_service.state.baseline.BaselineTracker`) and
  **enqueue** the alerts in the state database's outbox. Each poll of one followed file
  is one SQLite transaction holding the alerts of its lines, the baseline changes and
  the file's checkpoint, so ``kill -9`` at any instant neither loses nor repeats an
  alert: what was committed is past the checkpoint, what was not is read again
  (alerting-delivery-and-tailing.md §2.7 "Durable outbox", §4.2 item 5). The delivery
  workers (:mod:`alert_service.deliver`) send the outbox; the pipeline never waits for
  them.
* ``replay`` (:meth:`Pipeline.replay` / :meth:`Pipeline.process_line`): read files whole
  and hand each alert to a :class:`Dispatcher` (:class:`PrintDispatcher` prints it), with
  the baseline rules kept in a private in-memory database.

Bad input never stops the pipeline: a :class:`~alert_service.errors.ParseError` is
counted and logged with the line's file and offset, and the next line is read (when a
crashed writer's unterminated fragment is glued in front of a complete line, the
fragment is counted as ``malformed_fragments`` and the complete line is read); an
unexpected error on one line is counted (``processing_errors``) and the line skipped, so
one poisonous line cannot stop the service on every restart. A failed transaction is
rolled back, the file is read again from its last checkpoint after a pause.

Staleness: a configured source that yields no line for ``stale_after_secs`` logs
``source_stale`` once and counts in the ``stale_sources`` gauge until a line arrives.

Availability: a configured source whose file does not exist (a glob matching no file)
logs ``source_missing``, one that cannot be opened (permission denied...) logs
``source_unreadable`` — each with a hint — at the first poll and again every
:data:`SOURCE_PROBLEM_REPEAT_SECS` while it lasts, then ``source_found``; meanwhile it
counts in the ``sources_missing`` / ``sources_unreadable`` gauges and is listed in
``Stats.source_problems`` (shown by ``/health``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, cast

from alert_service.config import Config, SourceConfig
from alert_service.errors import ParseError, SourceError
from alert_service.logs import log_event
from alert_service.match import Alert, RuleSet
from alert_service.notify.http import encode_json
from alert_service.parse import Event, glued_line_start, parse_line
from alert_service.source import (
    DEFAULT_MAX_LINE_BYTES,
    FileFollower,
    LineChunk,
    Position,
    SourceLine,
    expand_glob,
    glob_base_error,
    read_whole_file,
)
from alert_service.state.baseline import BaselineMode, BaselineTracker
from alert_service.state.checkpoints import expire_checkpoints, load_checkpoint, save_checkpoint
from alert_service.state.db import open_state
from alert_service.state.outbox import enqueue_alerts
from alert_service.stats import Stats

__all__ = [
    "CHECKPOINT_EXPIRY_INTERVAL_SECS",
    "SOURCE_PROBLEM_REPEAT_SECS",
    "Dispatcher",
    "Pipeline",
    "PrintDispatcher",
]

_log = logging.getLogger(__name__)

CHECKPOINT_EXPIRY_INTERVAL_SECS = 3600.0
"""Seconds between two sweeps for expired checkpoints (also done at start)."""

SOURCE_PROBLEM_REPEAT_SECS = 600.0
"""While a source stays missing or unreadable, its warning is repeated this often, seconds."""

_GLOB_RESCANS_PER_POLL = 10  # a glob is expanded again every 10 poll intervals
_MAX_RETRY_PAUSE_SECS = 30.0


class Dispatcher(Protocol):
    """Where alerts go after matching (``replay``)."""

    def dispatch(self, alert: Alert) -> None:
        """Handle one alert; must not raise for delivery problems."""

    def close(self) -> None:
        """Release resources."""


class PrintDispatcher:
    """Write each alert as one compact JSON line (``replay``); sends nothing.

    The line is :meth:`Alert.as_dict` plus ``"notify": [notifier names]``.

    Args:
        stream: binary stream receiving UTF-8 JSON lines (e.g. ``sys.stdout.buffer``).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def dispatch(self, alert: Alert) -> None:
        """Write ``alert`` and flush."""
        doc = {**alert.as_dict(), "notify": list(alert.notify)}
        self.stream.write(encode_json(doc) + b"\n")
        self.stream.flush()

    def close(self) -> None:
        """Flush the stream (it is not closed)."""
        self.stream.flush()


@dataclass(eq=False, slots=True)
class _Followed:
    """One live file being followed and what is committed for it."""

    key: str
    follower: FileFollower
    committed: Position | None
    due: float = 0.0
    failures: int = 0


@dataclass(eq=False, slots=True)
class _Source:
    """One configured source (a path, or a glob naming several files)."""

    config: SourceConfig
    name: str
    files: dict[str, _Followed] = field(default_factory=dict)
    last_line: float = 0.0
    stale: bool = False
    next_scan: float = 0.0
    problem: tuple[str, str] | None = None  # (kind, reason), see _source_problem
    problem_since: float = 0.0
    problem_logged: float = 0.0


class Pipeline:
    """Parse, match and hand on lines; follow (``run``) or replay the configured sources.

    Args:
        config: validated configuration.
        dispatcher: receives every alert of :meth:`replay` / :meth:`process_line`
            (may be None when only ``run`` is used).
        stats: counters to update (a new :class:`Stats` when None).
        state: the state database (:func:`~alert_service.state.db.open_state`);
            required by :meth:`run` and :meth:`poll_once`.
        clock: wall time, seconds since the Unix epoch (outbox and checkpoint times).
        monotonic: monotonic time in seconds (polling, staleness, partial-line flush).
        max_read_bytes_per_poll: bytes read from one file per poll, at most about; one
            poll is one transaction.

    Raises:
        MatchError: a rule does not compile (``load_config`` has already checked this).
    """

    def __init__(
        self,
        config: Config,
        dispatcher: Dispatcher | None = None,
        stats: Stats | None = None,
        *,
        state: sqlite3.Connection | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_read_bytes_per_poll: int = 8 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.stats = stats if stats is not None else Stats()
        self.rules = RuleSet(config.rules)
        self.state = state
        self._clock = clock
        self._monotonic = monotonic
        self._max_read = max_read_bytes_per_poll
        self._packs = frozenset(config.known_packs)
        self._modes = cast(Mapping[str, BaselineMode], config.rule_baseline)
        self._baseline = (
            BaselineTracker(state, self._modes, self._matches_as_added, self.stats)
            if state is not None
            else None
        )
        self._replay_baseline: BaselineTracker | None = None
        self._sources: list[_Source] = []
        self._started = False
        self._next_expiry = 0.0

    # -- shared: one line ---------------------------------------------------------

    def _matches_as_added(self, event: Event) -> bool:
        return bool(self.rules.match(dataclasses.replace(event, action="added")))

    def _process_chunk(
        self, chunk: LineChunk, baseline: BaselineTracker | None, out: list[Alert]
    ) -> None:
        """Parse and match every line of ``chunk``; append the alerts to ``out``.

        Raises:
            sqlite3.Error: the baseline could not be updated (the caller rolls back).
        """
        stats = self.stats
        packs = self._packs
        match = self.rules.match
        events_seen = 0
        matches = 0
        for index, raw in enumerate(chunk.lines):
            try:
                try:
                    events = parse_line(raw, packs)
                except ParseError as err:
                    if not raw.strip():
                        continue
                    events = self._recover_glued(chunk, index, raw, str(err))
                for event in events:
                    alerts = match(event)
                    if alerts:
                        matches += len(alerts)
                    if baseline is not None:
                        alerts = baseline.apply(event, alerts)
                    if alerts:
                        out += alerts
                events_seen += len(events)
            except sqlite3.Error:
                raise
            except Exception as err:  # a bug must not stop the service on this line forever
                stats.processing_errors += 1
                self._line_failed(
                    "line_processing_failed", chunk, index, f"{type(err).__name__}: {err}"
                )
                _log.debug("line_processing_failed", exc_info=True)
        stats.lines_read += len(chunk.lines)
        stats.events += events_seen
        stats.matches += matches

    def _recover_glued(self, chunk: LineChunk, index: int, raw: bytes, error: str) -> list[Event]:
        """Handle a line that failed to parse; return the events it still gives.

        When an unterminated fragment (a writer crashed mid-line) is glued in front of
        a complete line (:func:`~alert_service.parse.glued_line_start`), the fragment
        is counted (``malformed_fragments``) and logged as ``line_fragment_skipped``
        and the complete line's events are returned; otherwise the line is counted and
        logged as a parse error and there are none.
        """
        stats = self.stats
        cut = glued_line_start(raw)
        if cut is None:
            stats.parse_errors += 1
            self._line_failed("line_parse_failed", chunk, index, error)
            return []
        start = self._line_start(chunk, index)
        stats.malformed_fragments += 1
        log_event(
            _log,
            logging.WARNING,
            "line_fragment_skipped",
            path=chunk.path,
            inode=chunk.identity.inode,
            offset=start,
            fragment_bytes=cut,
            line_offset=start + cut,
            reason="an unterminated line (a writer stopped mid-line) precedes this line",
        )
        try:
            return parse_line(raw[cut:], self._packs)
        except ParseError as err:
            stats.parse_errors += 1
            self._line_failed("line_parse_failed", chunk, index, str(err), cut)
            return []

    def match_chunk(self, chunk: LineChunk) -> list[Alert]:
        """Parse and match the lines of ``chunk``: the alerts, no baseline, no output.

        The hot loop of ``run`` without the state database (benchmarks, tests).
        Counters are updated as in ``run``.
        """
        alerts: list[Alert] = []
        self._process_chunk(chunk, None, alerts)
        return alerts

    @staticmethod
    def _line_start(chunk: LineChunk, index: int) -> int:
        """Byte offset of the first byte of line ``index`` of ``chunk``."""
        return chunk.ends()[index - 1] if index else chunk.start

    def _line_failed(
        self, event: str, chunk: LineChunk, index: int, reason: str, skip: int = 0
    ) -> None:
        log_event(
            _log,
            logging.WARNING,
            event,
            path=chunk.path,
            inode=chunk.identity.inode,
            offset=self._line_start(chunk, index) + skip,
            reason=reason,
        )

    # -- replay --------------------------------------------------------------------

    def _replay_tracker(self) -> BaselineTracker:
        if self._replay_baseline is None:
            memory = open_state(":memory:")
            self._replay_baseline = BaselineTracker(
                memory, self._modes, self._matches_as_added, self.stats
            )
        return self._replay_baseline

    def process_line(self, line: SourceLine) -> int:
        """Parse one line, match its events and dispatch the alerts (``replay``).

        Baseline runs are judged against the rows seen by this pipeline's earlier
        :meth:`process_line` calls (kept in memory).

        Returns:
            The number of alerts dispatched (0 for blank or malformed lines).

        Raises:
            ValueError: the pipeline has no dispatcher.
        """
        if self.dispatcher is None:
            raise ValueError("process_line needs a dispatcher")
        chunk = LineChunk(line.identity, line.path, line.start, [line.line], line.terminated)
        tracker = self._replay_tracker()
        alerts: list[Alert] = []
        self._process_chunk(chunk, tracker, alerts)
        alerts += tracker.take_digests()
        for alert in alerts:
            self.dispatcher.dispatch(alert)
        return len(alerts)

    def replay(self, paths: Iterable[str]) -> list[str]:
        """Read each file whole (``.zst``/``.gz`` decompressed) and process its lines.

        Args:
            paths: results logs, processed in order.

        Returns:
            The paths that could not be read (each logged); empty on full success.
        """
        max_line = max((s.max_line_bytes for s in self.config.sources), default=0)
        failed: list[str] = []
        for path in paths:
            try:
                for line in read_whole_file(
                    path, max_line_bytes=max_line or DEFAULT_MAX_LINE_BYTES, stats=self.stats
                ):
                    self.process_line(line)
            except SourceError as err:
                failed.append(path)
                log_event(_log, logging.ERROR, "replay_source_failed", path=path, reason=str(err))
        return failed

    # -- run -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow every source until ``stop`` is set, enqueueing alerts in the outbox.

        Raises:
            ValueError: the pipeline has no state database.
        """
        try:
            while not stop.is_set():
                pause = self.poll_once()
                if pause > 0:
                    stop.wait(pause)
        finally:
            self.close()

    def poll_once(self) -> float:
        """Poll every source that is due once, committing one transaction per file read.

        Returns:
            Seconds until the next source is due (0 when one has more to read now).

        Raises:
            ValueError: the pipeline has no state database.
        """
        conn = self.state
        if conn is None:
            raise ValueError("run needs a state database")
        now = self._monotonic()
        if not self._started:
            self._start(now)
        if now >= self._next_expiry:
            self._expire_checkpoints()
            self._next_expiry = now + CHECKPOINT_EXPIRY_INTERVAL_SECS
        next_due = now + 1.0
        for source in self._sources:
            if source.config.glob and now >= source.next_scan:
                self._scan_glob(source, initial=False)
                source.next_scan = now + source.config.poll_interval_secs * _GLOB_RESCANS_PER_POLL
                next_due = min(next_due, source.next_scan)
            for followed in list(source.files.values()):
                if now >= followed.due:
                    self._poll_file(conn, source, followed, now)
                next_due = min(next_due, followed.due)
            self._check_staleness(source, self._monotonic())
            self._check_availability(source, self._monotonic())
        self.stats.sources_followed = sum(
            1 for s in self._sources for f in s.files.values() if f.follower.identity is not None
        )
        return max(0.0, next_due - self._monotonic())

    def close(self) -> None:
        """Close every followed file (the pipeline may poll again afterwards)."""
        for source in self._sources:
            for followed in source.files.values():
                followed.follower.close()
        self._sources.clear()
        self._started = False

    def _start(self, now: float) -> None:
        self._started = True
        self._sources = []
        for src in self.config.sources:
            source = _Source(src, src.path, last_line=now)
            self._sources.append(source)
            self.stats.source_last_line_time.setdefault(src.path, 0.0)
            if src.glob:
                self._scan_glob(source, initial=True)
                source.next_scan = now + src.poll_interval_secs * _GLOB_RESCANS_PER_POLL
            else:
                self._follow(source, src.path, initial=True)
        self._publish_problems()  # none known yet (after close(), forget the old ones)

    def _scan_glob(self, source: _Source, *, initial: bool) -> None:
        matched = set(expand_glob(source.config.path))
        for path in sorted(matched - source.files.keys()):
            if self._follow(source, path, initial=initial) and not initial:
                log_event(_log, logging.INFO, "source_file_found", source=source.name, path=path)
        for path in list(source.files.keys() - matched):
            followed = source.files[path]
            if followed.follower.identity is None and not os.path.exists(path):
                followed.follower.close()
                del source.files[path]
                log_event(_log, logging.INFO, "source_file_gone", source=source.name, path=path)

    def _follow(self, source: _Source, path: str, *, initial: bool) -> bool:
        """Start following ``path`` for ``source``; False when another entry follows it."""
        assert self.state is not None
        if any(path in other.files for other in self._sources if other is not source):
            return False  # one reader and one checkpoint per file
        stored = load_checkpoint(self.state, path)
        src = source.config
        follower = FileFollower(
            path,
            # start_at governs files present when the service starts; files that a glob
            # finds later are new and read whole.
            start_at=src.start_at if initial else "beginning",
            max_line_bytes=src.max_line_bytes,
            stats=self.stats,
            max_read_bytes_per_poll=self._max_read,
            checkpoint=stored.position if stored is not None else None,
            checkpoint_time=stored.updated_at if stored is not None else None,
            partial_line_flush_secs=src.partial_line_flush_secs,
            clock=self._monotonic,
        )
        source.files[path] = _Followed(
            path, follower, stored.position if stored is not None else None
        )
        return True

    def _poll_file(
        self, conn: sqlite3.Connection, source: _Source, followed: _Followed, now: float
    ) -> None:
        follower = followed.follower
        chunks = follower.poll_chunks()
        position = follower.position()
        src = source.config
        followed.due = now if follower.has_more else now + src.poll_interval_secs
        if not chunks and (position is None or position == followed.committed):
            return
        baseline = self._baseline
        alerts: list[Alert] = []
        wall = self._clock()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for chunk in chunks:
                    self._process_chunk(chunk, baseline, alerts)
                if baseline is not None:
                    alerts += baseline.take_digests()
                inserted = enqueue_alerts(conn, alerts, wall)
                if position is not None:
                    save_checkpoint(conn, followed.key, position, wall)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as err:
            self._rewind(source, followed, err, now)
            return
        followed.committed = position
        followed.failures = 0
        self.stats.alerts_enqueued += inserted
        self.stats.transactions += 1
        wanted = sum(len(alert.notify) for alert in alerts)
        if inserted < wanted:
            # Same (alert id, rule, destination) already queued: the same row logged
            # twice, or lines read again. Harmless (the id is the idempotency key).
            log_event(
                _log,
                logging.INFO,
                "alerts_already_queued",
                path=followed.key,
                rows=wanted - inserted,
            )
        if chunks:
            source.last_line = self._monotonic()
            self.stats.source_last_line_time[source.name] = wall
        log_event(
            _log,
            logging.DEBUG,
            "batch_committed",
            path=followed.key,
            file=position.path if position is not None else None,
            offset=position.offset if position is not None else None,
            lines=sum(len(chunk.lines) for chunk in chunks),
            alerts=len(alerts),
            outbox_rows=inserted,
        )

    def _rewind(self, source: _Source, followed: _Followed, err: sqlite3.Error, now: float) -> None:
        """A transaction failed: forget what was read since the last commit."""
        self.stats.transaction_failures += 1
        if self._baseline is not None:
            self._baseline.forget()
        followed.failures += 1
        pause = min(_MAX_RETRY_PAUSE_SECS, 0.5 * 2 ** min(followed.failures, 10))
        log_event(
            _log,
            logging.ERROR,
            "state_transaction_failed",
            path=followed.key,
            error=type(err).__name__,
            reason=str(err),
            retry_in_secs=pause,
        )
        old = followed.follower
        restart_at = followed.committed or old.start_position
        old.close()
        src = source.config
        followed.follower = FileFollower(
            followed.key,
            start_at=old.start_at,
            max_line_bytes=src.max_line_bytes,
            stats=self.stats,
            max_read_bytes_per_poll=self._max_read,
            checkpoint=restart_at,
            checkpoint_time=self._clock(),
            partial_line_flush_secs=src.partial_line_flush_secs,
            clock=self._monotonic,
        )
        followed.due = now + pause

    def _check_staleness(self, source: _Source, now: float) -> None:
        limit = source.config.stale_after_secs
        idle = now - source.last_line
        if not source.stale and idle >= limit:
            source.stale = True
            self.stats.stale_sources += 1
            self.stats.staleness_warnings += 1
            log_event(
                _log,
                logging.WARNING,
                "source_stale",
                source=source.name,
                idle_secs=round(idle, 1),
                stale_after_secs=limit,
                files=sorted(source.files),
            )
        elif source.stale and idle < limit:
            source.stale = False
            self.stats.stale_sources -= 1
            log_event(_log, logging.INFO, "source_active_again", source=source.name)

    @staticmethod
    def _source_problem(source: _Source) -> tuple[str, str] | None:
        """``("missing" | "unreadable", reason)`` when no file of ``source`` can be read."""
        errors: list[OSError] = []
        for followed in source.files.values():
            err = followed.follower.open_error
            if err is None:
                return None  # a file is read (or not tried yet)
            errors.append(err)
        first: OSError
        if errors:
            first = errors[0]
        elif source.config.glob:
            base = glob_base_error(source.config.path)
            if base is None or isinstance(base, FileNotFoundError):
                return "missing", "no file matches"
            first = base  # glob.glob() says nothing when it may not list a directory
        else:
            return None  # the path is followed by another entry of ``sources``
        if isinstance(first, FileNotFoundError):
            return "missing", "no such file"
        name = errno.errorcode.get(first.errno or 0)
        text = first.strerror or str(first)
        return "unreadable", f"{text} ({name})" if name else text

    def _check_availability(self, source: _Source, now: float) -> None:
        """Log a source going missing/unreadable (again every 10 minutes) or coming back."""
        problem = self._source_problem(source)
        previous = source.problem
        if problem is None:
            if previous is not None:
                source.problem = None
                self._publish_problems()
                log_event(
                    _log,
                    logging.INFO,
                    "source_found",
                    path=source.name,
                    was=previous[0],
                    missing_secs=round(now - source.problem_since, 1),
                )
            return
        if previous is None or previous != problem:
            if previous is None:
                source.problem_since = now
            source.problem = problem
            self._publish_problems()
        elif now - source.problem_logged < SOURCE_PROBLEM_REPEAT_SECS:
            return
        source.problem_logged = now
        kind, reason = problem
        log_event(
            _log,
            logging.WARNING,
            f"source_{kind}",
            path=source.name,
            reason=reason,
            missing_secs=round(now - source.problem_since, 1),
            hint=_problem_hint(kind),
        )

    def _publish_problems(self) -> None:
        problems = {s.name: f"{s.problem[0]}: {s.problem[1]}" for s in self._sources if s.problem}
        stats = self.stats
        stats.sources_missing = sum(
            1 for s in self._sources if s.problem and s.problem[0] == "missing"
        )
        stats.sources_unreadable = sum(
            1 for s in self._sources if s.problem and s.problem[0] == "unreadable"
        )
        stats.source_problems = problems  # replaced whole: /health reads it from a thread

    def _expire_checkpoints(self) -> None:
        assert self.state is not None
        keep = [path for source in self._sources for path in source.files]
        try:
            gone = expire_checkpoints(
                self.state, keep, self._clock(), self.config.checkpoint_expiry_secs
            )
        except sqlite3.Error as err:
            log_event(_log, logging.ERROR, "checkpoint_expiry_failed", reason=str(err))
            return
        for path in gone:
            log_event(_log, logging.INFO, "checkpoint_expired", source=path)


def _problem_hint(kind: str) -> str:
    """What to check when a source is missing or unreadable (uid/gid of this process)."""
    user = f"uid {os.geteuid()}, gid {os.getegid()}"
    if kind == "missing":
        return (
            "is this the results log osqueryd writes (osqueryd.results.log under its "
            "--logger_path, default /var/log/osquery) or Fleet's "
            f"filesystem.result_log_file? Is its directory readable by this user ({user})?"
        )
    return (
        f"is it readable by this user ({user})? osqueryd creates it with --logger_mode "
        "(default 0640: owner and group), Fleet with mode 0644; add this user to the "
        "file's group or run the service as that user"
    )
