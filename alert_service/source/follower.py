"""Follow one results log as it grows, across rename rotation and truncation.

Implements the tailing rules of alerting-delivery-and-tailing.md §4.2 that the
walking skeleton needs:

* only complete lines are returned; an unterminated tail waits for its ``\\n``;
* rename rotation (osquery ``--logger_rotate``, plugins/logger/logrotate.h renames
  ``osqueryd.results.log`` to ``.1``): when the path names a new (device, inode), the
  old open file is read to EOF first, then the new file is read from offset 0;
* a path that does not exist (yet, or between rotation steps) is waited for;
* truncation (size < read offset) restarts at 0 and is counted;
* lines longer than ``max_line_bytes`` are skipped and counted.

:meth:`FileFollower.poll` does one non-blocking pass based on ``stat()``; the pipeline
calls it every ``poll_interval_secs``. Checkpoints (SQLite), ``.N.zst`` catch-up and
copytruncate fingerprints come later and hook in at :meth:`FileFollower.poll`.
"""

from __future__ import annotations

import io
import logging
import os
from types import TracebackType

from alert_service.logs import log_event
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter
from alert_service.source.records import FileIdentity, SourceLine, StartAt
from alert_service.stats import Stats

__all__ = ["DEFAULT_POLL_INTERVAL_SECS", "FileFollower"]

DEFAULT_POLL_INTERVAL_SECS = 0.25
"""Default pause between two polls of a source, in seconds."""

_CHUNK_BYTES = 64 * 1024
_MAX_READ_BYTES_PER_POLL = 8 * 1024 * 1024

_log = logging.getLogger(__name__)


class FileFollower:
    """Follow the file at ``path`` the way ``tail -F`` does, line by line.

    Args:
        path: path of the log; it may not exist yet.
        start_at: for a file that exists at the first poll, ``"end"`` skips its current
            content (starting after the last complete line's ``\\n``; a partly written
            last line is skipped too) and ``"beginning"`` reads it whole. Files that
            appear later (created, or the new file after a rotation) are always read
            from offset 0.
        max_line_bytes: longest accepted line in bytes, newline excluded.
        stats: counters to update (``truncations``, ``rotations``,
            ``lines_skipped_too_long``, ``partial_lines_dropped``); a private
            :class:`~alert_service.stats.Stats` when None.
        max_read_bytes_per_poll: read at most about this many bytes of the current file
            per :meth:`poll` (the old file is always drained whole at a rotation), so
            one busy source cannot starve the others; :attr:`has_more` tells whether to
            poll again at once.

    Not thread-safe: one thread polls a follower.
    """

    def __init__(
        self,
        path: str,
        *,
        start_at: StartAt = "end",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stats: Stats | None = None,
        max_read_bytes_per_poll: int = _MAX_READ_BYTES_PER_POLL,
    ) -> None:
        self.path = path
        self.start_at: StartAt = start_at
        self.stats = stats if stats is not None else Stats()
        self.has_more = False
        self._max_read = max_read_bytes_per_poll
        self._file: io.FileIO | None = None
        self._identity: FileIdentity | None = None
        self._first_poll = True
        self._last_problem: str | None = None
        self._splitter = LineSplitter(max_line_bytes, on_too_long=self._too_long)

    @property
    def identity(self) -> FileIdentity | None:
        """(device, inode) of the file being read, or None before one is open."""
        return self._identity

    @property
    def offset(self) -> int:
        """Byte offset read so far in the current file (buffered partial line included)."""
        return self._splitter.offset

    def poll(self) -> list[SourceLine]:
        """Read whatever complete lines are available now, without blocking.

        Returns:
            New complete lines in file order; at a rotation the old file's last lines
            come before the new file's first ones. Empty when nothing new arrived or
            the path does not exist.

        Never raises for an unreadable path: the problem is logged once (until it
        changes) and the next poll tries again.
        """
        first_poll = self._first_poll
        self._first_poll = False
        path_identity = self._stat_path()
        if self._file is None:
            if path_identity is None:
                return []
            if not self._open(skip_existing=first_poll and self.start_at == "end"):
                return []
            # Just opened: its identity is the path's by construction, so no rotation
            # check in this pass (the stat above may predate the file we opened).
            return self._read(self._max_read)
        self._check_truncation()
        lines = self._read(self._max_read)
        if path_identity is not None and path_identity != self._identity:
            # The path names a new file. Everything written to the old one before the
            # rename was written before our stat(), so reading it to EOF now loses
            # nothing; then switch to the new file from offset 0.
            lines += self._read(None)
            self._switch()
            lines += self._read(self._max_read)
        return lines

    def close(self) -> None:
        """Close the open file, if any. The follower may be polled again afterwards."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._identity = None

    def __enter__(self) -> FileFollower:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _stat_path(self) -> FileIdentity | None:
        try:
            return FileIdentity.of(os.stat(self.path))
        except FileNotFoundError:
            return None
        except OSError as err:
            self._problem("source_stat_failed", err)
            return None

    def _open(self, *, skip_existing: bool) -> bool:
        try:
            fh = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            return False
        except OSError as err:
            self._problem("source_open_failed", err)
            return False
        st = os.fstat(fh.fileno())
        self._file = fh
        self._identity = FileIdentity.of(st)
        self._last_problem = None
        start = 0
        skip_first = False
        if skip_existing and st.st_size > 0:
            start = st.st_size
            fh.seek(start - 1)
            skip_first = fh.read(1) != b"\n"
            fh.seek(start)
        self._splitter.reset(start, skip_first=skip_first)
        log_event(
            _log,
            logging.INFO,
            "source_opened",
            path=self.path,
            dev=st.st_dev,
            inode=st.st_ino,
            offset=start,
        )
        return True

    def _check_truncation(self) -> None:
        if self._file is None:
            return
        size = os.fstat(self._file.fileno()).st_size
        if size >= self._splitter.offset:
            return
        self.stats.truncations += 1
        self._drop_partial("truncation")
        log_event(
            _log,
            logging.WARNING,
            "source_truncated",
            path=self.path,
            size=size,
            offset=self._splitter.offset,
        )
        self._file.seek(0)
        self._splitter.reset(0)

    def _switch(self) -> None:
        old = self._identity
        self._drop_partial("rotation")
        self.close()
        self.stats.rotations += 1
        log_event(
            _log,
            logging.INFO,
            "source_rotated",
            path=self.path,
            old_inode=old.inode if old else None,
        )
        self._open(skip_existing=False)

    def _read(self, limit: int | None) -> list[SourceLine]:
        out: list[SourceLine] = []
        fh, identity = self._file, self._identity
        if fh is None or identity is None:
            return out
        total = 0
        self.has_more = False
        while True:
            if limit is not None and total >= limit:
                self.has_more = True
                break
            try:
                chunk = fh.read(_CHUNK_BYTES)
            except OSError as err:
                self._problem("source_read_failed", err)
                break
            if not chunk:
                break
            total += len(chunk)
            for line, end in self._splitter.feed(chunk):
                out.append(SourceLine(line, identity, end, self.path))
        return out

    def _drop_partial(self, reason: str) -> None:
        pending = self._splitter.pending_bytes
        if pending:
            self.stats.partial_lines_dropped += 1
            log_event(
                _log,
                logging.WARNING,
                "source_partial_line_dropped",
                path=self.path,
                reason=reason,
                bytes=pending,
            )

    def _too_long(self, line_offset: int) -> None:
        self.stats.lines_skipped_too_long += 1
        log_event(
            _log,
            logging.WARNING,
            "source_line_too_long",
            path=self.path,
            offset=line_offset,
            max_line_bytes=self._splitter.max_line_bytes,
        )

    def _problem(self, event: str, err: OSError) -> None:
        text = f"{event}:{type(err).__name__}:{err.errno}"
        if text != self._last_problem:
            self._last_problem = text
            log_event(
                _log,
                logging.WARNING,
                event,
                path=self.path,
                error=type(err).__name__,
                errno=err.errno,
                reason=err.strerror,
            )
