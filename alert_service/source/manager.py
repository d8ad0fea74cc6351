"""Hand the pipeline batches of lines from every configured file; take back the outcome.

The source stage's face toward the pipeline, in the manner of Filebeat's filestream
prospector over its harvesters (filebeat/input/filestream/prospector.go, Beats 8.x):
:class:`FileSources` owns every per-source and per-file concern — globs and their
rescans, one :class:`~alert_service.source.FileFollower` per live file, staleness,
missing or unreadable sources, the rewind after a failed commit and the expiry of
checkpoints of files no longer followed. The pipeline only sees :class:`Batch` es:

1. :meth:`FileSources.poll` yields one :class:`Batch` per file that is due and has
   something new (lines, or a position to store);
2. the pipeline parses, matches and commits the batch (its outbox rows and the
   batch's :attr:`Batch.position` in one transaction), then calls
   :meth:`FileSources.committed` or :meth:`FileSources.failed` before asking for the
   next batch;
3. :meth:`FileSources.pause` says how long to wait before polling again.

Another kind of source (a message stream, say) is one more class with the same
methods (:class:`SourceSet`); one whose progress is kept elsewhere (an
acknowledgement) yields batches with ``position`` None and acknowledges in
``committed``.

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

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from alert_service.logs import log_event
from alert_service.source.config import SourceConfig
from alert_service.source.follower import FileFollower
from alert_service.source.globs import expand_glob, glob_base_error
from alert_service.source.records import LineChunk, Position, StartAt
from alert_service.stats import Stats

__all__ = [
    "CHECKPOINT_EXPIRY_INTERVAL_SECS",
    "SOURCE_PROBLEM_REPEAT_SECS",
    "Batch",
    "CheckpointStore",
    "FileSources",
    "SourceSet",
]

_log = logging.getLogger(__name__)

CHECKPOINT_EXPIRY_INTERVAL_SECS = 3600.0
"""Seconds between two sweeps for expired checkpoints (also done at start)."""

SOURCE_PROBLEM_REPEAT_SECS = 600.0
"""While a source stays missing or unreadable, its warning is repeated this often, seconds."""

_GLOB_RESCANS_PER_POLL = 10  # a glob is expanded again every 10 poll intervals
_MAX_RETRY_PAUSE_SECS = 30.0


@dataclass(eq=False, slots=True)
class Batch:
    """What one poll of one followed file gives the pipeline.

    Attributes:
        key: the followed live path; the checkpoint's key.
        chunks: the new complete lines, in file order (may be empty when only the
            position moved, e.g. past a skipped over-long line).
        position: where the next unread line starts, to be stored with the batch's
            alerts; None when there is nothing to store.
        fence: called with the state connection inside the batch's transaction,
            just before it commits; raises (a :class:`sqlite3.Error`) to refuse the
            commit — a partition whose lease this instance lost. None = no check.
    """

    key: str
    chunks: list[LineChunk]
    position: Position | None
    fence: Callable[[Any], None] | None = None


class CheckpointStore(Protocol):
    """Where checkpoints are read at start and expired (the pipeline writes them)."""

    def load(self, key: str) -> tuple[Position, float] | None:
        """The stored position of ``key`` and when it was written (Unix seconds)."""

    def expire(self, keep: Iterable[str], now: float) -> list[str]:
        """Delete expired checkpoints not in ``keep``; return their keys.

        Raises:
            sqlite3.Error: the store could not be read or written.
        """


class SourceSet(Protocol):
    """One kind of source as the pipeline sees it."""

    def poll(self) -> Iterator[Batch]:
        """Yield a batch for each input that is due and has news; never blocks."""

    def committed(self, batch: Batch) -> None:
        """``batch`` (the last one yielded) is stored."""

    def failed(self, batch: Batch, error: Exception) -> None:
        """``batch`` could not be stored: read its lines again after a pause."""

    def pause(self) -> float:
        """Seconds until an input is due (0 when one has more to read now)."""

    def close(self) -> None:
        """Release every input (polling again starts over)."""


@dataclass(eq=False, slots=True)
class _Followed:
    """One live file being followed and what is committed for it."""

    key: str
    follower: FileFollower
    committed: Position | None
    source: _Source
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


class FileSources:
    """Follow every configured results log; one :class:`Batch` per due file and poll.

    Args:
        configs: the ``sources`` items, in order.
        checkpoints: where each file's checkpoint is found at start, and expired.
        stats: counters and gauges to update.
        clock: wall time, seconds since the Unix epoch.
        monotonic: monotonic time in seconds (polling, staleness, partial-line flush).
        max_read_bytes_per_poll: bytes read from one file per poll, at most about.
    """

    def __init__(
        self,
        configs: Sequence[SourceConfig],
        checkpoints: CheckpointStore,
        stats: Stats,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_read_bytes_per_poll: int = 8 * 1024 * 1024,
    ) -> None:
        self._configs = tuple(configs)
        self._checkpoints = checkpoints
        self.stats = stats
        self._clock = clock
        self._monotonic = monotonic
        self._max_read = max_read_bytes_per_poll
        self._sources: list[_Source] = []
        self._started = False
        self._published: frozenset[str] = frozenset()  # names this set put in source_problems
        self._next_expiry = 0.0
        self._pause = 0.0
        self._now = 0.0  # monotonic time of the poll under way

    # -- the pipeline's side -------------------------------------------------------

    def poll(self) -> Iterator[Batch]:
        """Poll every file that is due; yield a batch for each one with news.

        Call :meth:`committed` or :meth:`failed` for each batch before taking the
        next one.
        """
        now = self._now = self._monotonic()
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
                    batch = self._read(followed, now)
                    if batch is not None:
                        yield batch
                next_due = min(next_due, followed.due)
            self._check_staleness(source, self._monotonic())
            self._check_availability(source, self._monotonic())
        self.stats.sources_followed = sum(
            1 for s in self._sources for f in s.files.values() if f.follower.identity is not None
        )
        self._pause = max(0.0, next_due - self._monotonic())

    def committed(self, batch: Batch) -> None:
        """The batch's alerts and position are stored."""
        followed = self._followed(batch.key)
        followed.committed = batch.position
        followed.failures = 0
        if batch.chunks:
            source = followed.source
            source.last_line = self._monotonic()
            self.stats.source_last_line_time[source.name] = self._clock()

    def failed(self, batch: Batch, error: Exception) -> None:
        """Storing failed: forget what was read since the last commit, retry later."""
        followed = self._followed(batch.key)
        followed.failures += 1
        pause = min(_MAX_RETRY_PAUSE_SECS, 0.5 * 2 ** min(followed.failures, 10))
        log_event(
            _log,
            logging.ERROR,
            "state_transaction_failed",
            path=followed.key,
            error=type(error).__name__,
            reason=str(error),
            retry_in_secs=pause,
        )
        old = followed.follower
        restart_at = followed.committed or old.start_position
        old.close()
        followed.follower = self._follower(
            followed.source.config,
            followed.key,
            start_at=old.start_at,
            checkpoint=restart_at,
            checkpoint_time=self._clock(),
        )
        followed.due = self._now + pause

    def pause(self) -> float:
        """Seconds until the next file is due, as of the end of the last :meth:`poll`."""
        return self._pause

    def close(self) -> None:
        """Close every followed file (polling again starts over from the checkpoints)."""
        for source in self._sources:
            for followed in source.files.values():
                followed.follower.close()
        self._sources.clear()
        self._started = False
        self._publish_problems()  # this set's problems end with it

    # -- files ---------------------------------------------------------------------

    def _followed(self, key: str) -> _Followed:
        for source in self._sources:
            followed = source.files.get(key)
            if followed is not None:
                return followed
        raise KeyError(key)

    def _read(self, followed: _Followed, now: float) -> Batch | None:
        follower = followed.follower
        chunks = follower.poll_chunks()
        position = follower.position()
        followed.due = now if follower.has_more else now + followed.source.config.poll_interval_secs
        if not chunks and (position is None or position == followed.committed):
            return None
        return Batch(followed.key, chunks, position)

    def _start(self, now: float) -> None:
        self._started = True
        self._sources = []
        for src in self._configs:
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
        if any(path in other.files for other in self._sources if other is not source):
            return False  # one reader and one checkpoint per file
        stored = self._checkpoints.load(path)
        position, written = stored if stored is not None else (None, None)
        follower = self._follower(
            source.config,
            path,
            # start_at governs files present when the service starts; files that a glob
            # finds later are new and read whole.
            start_at=source.config.start_at if initial else "beginning",
            checkpoint=position,
            checkpoint_time=written,
        )
        source.files[path] = _Followed(path, follower, position, source)
        return True

    def _follower(
        self,
        src: SourceConfig,
        path: str,
        *,
        start_at: StartAt,
        checkpoint: Position | None,
        checkpoint_time: float | None,
    ) -> FileFollower:
        return FileFollower(
            path,
            start_at=start_at,
            max_line_bytes=src.max_line_bytes,
            stats=self.stats,
            max_read_bytes_per_poll=self._max_read,
            checkpoint=checkpoint,
            checkpoint_time=checkpoint_time,
            partial_line_flush_secs=src.partial_line_flush_secs,
            clock=self._monotonic,
        )

    def _expire_checkpoints(self) -> None:
        keep = [path for source in self._sources for path in source.files]
        try:
            gone = self._checkpoints.expire(keep, self._clock())
        except sqlite3.Error as err:
            log_event(_log, logging.ERROR, "checkpoint_expiry_failed", reason=str(err))
            return
        for path in gone:
            log_event(_log, logging.INFO, "checkpoint_expired", source=path)

    # -- health --------------------------------------------------------------------

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
        """Put this set's problems in ``stats.source_problems``, replacing the ones it
        put there before and keeping those of other kinds of source (a ``nats`` source
        of the same configuration sets its own names there)."""
        mine = {s.name: f"{s.problem[0]}: {s.problem[1]}" for s in self._sources if s.problem}
        stats = self.stats
        published = self._published
        problems = {k: v for k, v in stats.source_problems.items() if k not in published}
        problems.update(mine)
        self._published = frozenset(mine)
        stats.sources_missing = sum(
            1 for s in self._sources if s.problem and s.problem[0] == "missing"
        )
        stats.sources_unreadable = sum(
            1 for s in self._sources if s.problem and s.problem[0] == "unreadable"
        )
        stats.source_problems = problems  # replaced whole: /health reads it from a thread


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
