"""Follow one results log as it grows, across rotation, truncation and restarts.

How and why: docs/design/following-logs.md. In short:

* only complete lines are returned; an unterminated tail waits for its ``\\n``. A file
  that is finished (rotated away, deleted, or compressed) but ends without one has that
  last line flushed once it has not grown for ``partial_line_flush_secs``;
* rename rotation — osquery ``--logger_rotate`` (``<log>`` → ``.1`` → ``.N.zst``,
  plugins/logger/logrotate.h) and Fleet's lumberjack (``<name>-<timestamp>[.gz]``,
  docs/design/osquery-interfaces.md §4): when the path names a new (device, inode), the old
  file (still open) is read to its end first, then any rotated sibling newer than it
  (more than one rotation between two polls), then the new file from offset 0;
* truncation and copytruncate: the file is shorter than the bytes read, or its head
  (first ≤1024 bytes) changed on the same inode → counted as a truncation and a
  possible loss, reading restarts at 0; if a rotated sibling holds a copy of the old
  content (logrotate ``copytruncate`` → ``<log>.1``), its unread rest is read first;
* a path that does not exist (yet, or between rotation steps) is waited for, and so is
  one that cannot be opened (:attr:`FileFollower.open_error` says why, for the owner to
  report); a file deleted and recreated is read to its end, then the new one from 0;
* lines longer than ``max_line_bytes`` have their long texts cut (``lines_cut``,
  ``source_line_cut``); one still too long after that is skipped and counted; the
  next line is read;
* resuming from a :class:`~alert_service.source.records.Position` (the checkpoint):
  the live file when it is still the checkpointed one (same identity, same head
  fingerprint, not shorter than the offset); otherwise the rotated sibling holding it
  (same identity and fingerprint, or a compressed/copied file with the same
  fingerprint) is finished first, then every newer sibling, then the live file from 0.
  A checkpointed file found nowhere counts as a possible loss; siblings modified after
  the checkpoint was written are then read whole;
* no checkpoint and ``start_at="beginning"``: every rotated sibling still on disk,
  oldest first, then the live file, all from offset 0.

:meth:`FileFollower.poll_chunks` does one non-blocking pass based on ``stat()``; the
pipeline calls it every ``poll_interval_secs``. Not thread-safe: one thread polls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from types import TracebackType

from alert_service.logs import log_event
from alert_service.source.files import CONTENT_ERRORS, ContentFile
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter
from alert_service.source.records import (
    FINGERPRINT_BYTES,
    FileIdentity,
    LineChunk,
    Position,
    SourceLine,
    StartAt,
    fingerprint,
)
from alert_service.source.rotation import Sibling, list_siblings, same_content
from alert_service.stats import Stats

__all__ = [
    "DEFAULT_PARTIAL_LINE_FLUSH_SECS",
    "DEFAULT_POLL_INTERVAL_SECS",
    "FileFollower",
    "head_matches",
]

DEFAULT_POLL_INTERVAL_SECS = 0.25
"""Default pause between two polls of a source, in seconds."""

DEFAULT_PARTIAL_LINE_FLUSH_SECS = 5.0
"""Default wait, in seconds, before the unterminated last line of a finished file is
taken as a line."""

_CHUNK_BYTES = 256 * 1024
_MAX_READ_BYTES_PER_POLL = 8 * 1024 * 1024
_MAX_BACKSCAN_BYTES = 64 * 1024

_log = logging.getLogger(__name__)


def head_matches(head: bytes, position: Position) -> bool:
    """True when ``head`` (a file's first bytes) has the fingerprint of ``position``."""
    n = position.fingerprint_bytes
    return len(head) >= n and fingerprint(head[:n]) == position.fingerprint


class _Reader:
    """One open file in the follower's queue."""

    __slots__ = ("file", "head", "last_growth", "live", "splitter")

    def __init__(
        self, file: ContentFile, splitter: LineSplitter, *, live: bool, head: bytes, now: float
    ) -> None:
        self.file = file
        self.splitter = splitter
        self.live = live
        self.head = head
        self.last_growth = now


class FileFollower:
    """Follow the log at ``path`` the way ``tail -F`` does, and resume where it stopped.

    Args:
        path: path of the live log; it may not exist yet.
        start_at: without a checkpoint, for a file that exists at the first poll:
            ``"end"`` skips its current content (starting after its last complete
            line) and every rotated sibling; ``"beginning"`` reads every rotated
            sibling still on disk, oldest first, then the file, all whole (the log may
            have been rotated before any checkpoint was stored). Files that appear later (created,
            or the new file after a rotation) are always read from offset 0.
        max_line_bytes: longest accepted line in bytes, newline excluded.
        stats: counters to update (``truncations``, ``rotations``, ``possible_data_loss``,
            ``lines_skipped_too_long``, ``partial_lines_dropped``,
            ``partial_lines_flushed``); a private :class:`~alert_service.stats.Stats`
            when None.
        max_read_bytes_per_poll: read at most about this many bytes per
            :meth:`poll_chunks`, so one busy source cannot starve the others;
            :attr:`has_more` tells whether to poll again at once.
        checkpoint: where a previous run stopped (see the module docs); None to start
            per ``start_at``.
        checkpoint_time: when ``checkpoint`` was written, seconds since the Unix
            epoch; used only when its file is found nowhere.
        partial_line_flush_secs: how long a finished file's unterminated last line
            may stay without growing before it is taken as a line, seconds.
        clock: monotonic time in seconds (injectable for tests).

    Attributes:
        path: as given.
        open_error: why the live path could not be opened at the last attempt
            (``FileNotFoundError`` while it does not exist, ``PermissionError``...), or
            None (open, or not tried yet). The follower does not log it; its owner
            reports it (the pipeline logs ``source_missing`` / ``source_unreadable``).
        has_more: True when the last poll stopped at its byte budget.
        start_position: the position before the first line was read (the checkpoint,
            or where ``start_at`` put it); None while no file was open. A caller whose
            first batch could not be stored rewinds to it.
    """

    def __init__(
        self,
        path: str,
        *,
        start_at: StartAt = "end",
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        stats: Stats | None = None,
        max_read_bytes_per_poll: int = _MAX_READ_BYTES_PER_POLL,
        checkpoint: Position | None = None,
        checkpoint_time: float | None = None,
        partial_line_flush_secs: float = DEFAULT_PARTIAL_LINE_FLUSH_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.start_at: StartAt = start_at
        self.stats = stats if stats is not None else Stats()
        self.has_more = False
        self.max_line_bytes = max_line_bytes
        self._max_read = max_read_bytes_per_poll
        self._checkpoint = checkpoint
        self._checkpoint_time = checkpoint_time
        self._flush_secs = partial_line_flush_secs
        self._clock = clock
        self._queue: list[_Reader] = []
        self._done: Position | None = checkpoint
        self._started = False
        self._last_problem: str | None = None
        self.open_error: OSError | None = None
        self.start_position: Position | None = checkpoint

    # -- public ----------------------------------------------------------------

    @property
    def identity(self) -> FileIdentity | None:
        """(device, inode) of the file being read, or None when none is open."""
        return self._queue[0].file.identity if self._queue else None

    @property
    def offset(self) -> int:
        """Bytes read so far in the current file (a buffered partial line included)."""
        return self._queue[0].splitter.offset if self._queue else 0

    def position(self) -> Position | None:
        """Return where the next unread line starts: the checkpoint to store.

        It covers every line returned so far (never a partial one). None before any
        file was seen.
        """
        if not self._queue:
            return self._done
        return self._position_of(self._queue[0])

    def poll_chunks(self) -> list[LineChunk]:
        """Read whatever complete lines are available now, without blocking.

        Returns:
            New lines in file order, grouped per file and contiguous run; at a rotation
            the old file's last lines come before newer files' lines. Empty when
            nothing new arrived or the path does not exist.

        Never raises for an unreadable path or file: the next poll tries again. A
        live path that cannot be opened is recorded in :attr:`open_error`; other read
        problems are logged once (until they change).
        """
        if not self._started:
            self._started = True
            if self._checkpoint is not None:
                self._resume(self._checkpoint)
            elif self.start_at == "beginning":
                self._open_from_beginning()
            else:
                self._open_live(skip_existing=True)
            self.start_position = self.position()
        out: list[LineChunk] = []
        budget = self._max_read
        self.has_more = False
        while True:
            if not self._queue and not self._open_live(skip_existing=False):
                break
            cur = self._queue[0]
            if cur.live:
                self._check_live(cur)
                cur = self._queue[0]
            done, failed = self._read(cur, budget, out)
            budget -= done
            if budget <= 0:
                self.has_more = True
                break
            if cur.live or failed or not self._finish(cur, out):
                break
        return out

    def poll(self) -> list[SourceLine]:
        """Like :meth:`poll_chunks`, one :class:`SourceLine` per line."""
        return [line for chunk in self.poll_chunks() for line in chunk.source_lines()]

    def close(self) -> None:
        """Close every open file. The follower may be polled again afterwards."""
        if self._queue:
            self._done = self._position_of(self._queue[0])
        for reader in self._queue:
            reader.file.close()
        self._queue.clear()
        if self._done is not None:
            # Polled again: continue from where reading stood.
            self._checkpoint = self._done
            self._started = False

    def __enter__(self) -> FileFollower:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------

    def _new_reader(self, file: ContentFile, *, live: bool, offset: int = 0) -> _Reader | None:
        splitter = LineSplitter(
            self.max_line_bytes,
            self._too_long_callback(file.path),
            offset,
            on_cut=self._cut_callback(file.path),
        )
        try:
            head = file.head(FINGERPRINT_BYTES)
            reached = file.seek(offset) if offset else 0
        except CONTENT_ERRORS as err:
            self._unreadable(file, err)
            file.close()
            return None
        splitter.reset(reached)
        return _Reader(file, splitter, live=live, head=head, now=self._clock())

    def _open_path(self) -> ContentFile | None:
        try:
            file = ContentFile.open(self.path)
        except OSError as err:  # FileNotFoundError included: waited for, not an error
            self.open_error = err
            return None
        self.open_error = None
        self._last_problem = None
        return file

    def _open_live(self, *, skip_existing: bool) -> bool:
        file = self._open_path()
        if file is None:
            return False
        reader = self._new_reader(file, live=True)
        if reader is None:
            return False
        start = 0
        if skip_existing:
            start = self._skip_existing(reader)
        self._queue.append(reader)
        log_event(
            _log,
            logging.INFO,
            "source_opened",
            path=self.path,
            dev=file.identity.dev,
            inode=file.identity.inode,
            offset=start,
        )
        return True

    def _skip_existing(self, reader: _Reader) -> int:
        """Start ``reader`` after the existing content; return the first offset read."""
        try:
            size = reader.file.size()
            if size == 0:
                return 0
            fd_tail = min(size, _MAX_BACKSCAN_BYTES)
            tail = reader.file.pread(fd_tail, size - fd_tail)
            reader.file.seek(size)
        except OSError as err:
            self._problem("source_read_failed", err)
            return 0
        if tail.endswith(b"\n"):
            reader.splitter.reset(size)
        else:
            # A line is being written: skip it, but never checkpoint inside it.
            nl = tail.rfind(b"\n")
            line_start = size - fd_tail + nl + 1 if nl >= 0 else max(0, size - fd_tail)
            reader.splitter.reset(size, skip_first=True, consumed=line_start)
        return size

    def _open_from_beginning(self) -> None:
        """No checkpoint and ``start_at: beginning``: every rotated generation, then the log.

        The service may never have stored a checkpoint for this log (first start, or
        every earlier start was killed before its first commit) while osquery rotated
        it, any number of times: those lines are only in the rotated siblings. They are
        queued oldest first (``.N.zst`` … ``.2.zst``, ``.1``), then the live file, all
        from offset 0. The live file is opened before the siblings are listed, so a
        rotation in between shows it as a sibling (skipped: it is read as the live
        file, and its rotation is then handled as usual). A sibling with the same head
        as the next newer one (``.1`` while its compressed copy ``.2.zst`` is being
        put in place) or as the live file (a ``copytruncate`` copy not yet truncated)
        is the same content and is left out.
        """
        live = self._open_path()
        siblings = list_siblings(self.path, self._sibling_unreadable)
        live_reader = self._new_reader(live, live=True) if live is not None else None
        live_head = live_reader.head if live_reader is not None else b""
        used: set[int] = set()
        for i, sib in enumerate(siblings):
            if live is not None and sib.identity == live.identity:
                continue
            if same_content(sib.head, live_head):
                continue
            if i + 1 < len(siblings) and same_content(sib.head, siblings[i + 1].head):
                continue
            self._queue_sibling(sib, used)
        for sib in siblings:
            if id(sib) not in used:
                sib.file.close()
        if used:
            log_event(
                _log,
                logging.INFO,
                "source_reading_rotated",
                path=self.path,
                files=[reader.file.path for reader in self._queue],
            )
        if live_reader is not None:
            self._queue.append(live_reader)
            identity = live_reader.file.identity
            log_event(
                _log,
                logging.INFO,
                "source_opened",
                path=self.path,
                dev=identity.dev,
                inode=identity.inode,
                offset=0,
            )

    def _resume(self, cp: Position) -> None:
        live = self._open_path()
        if live is not None and live.identity == cp.identity:
            try:
                head = live.head(FINGERPRINT_BYTES)
                size = live.size()
            except OSError as err:
                self._problem("source_read_failed", err)
                head, size = b"", -1
            if head_matches(head, cp) and size >= cp.offset:
                reader = self._new_reader(live, live=True, offset=cp.offset)
                if reader is not None:
                    self._queue.append(reader)
                    log_event(
                        _log,
                        logging.INFO,
                        "source_resumed",
                        path=self.path,
                        inode=cp.identity.inode,
                        offset=cp.offset,
                    )
                return
        siblings = list_siblings(self.path, self._sibling_unreadable)
        found = self._find_checkpointed(siblings, cp)
        used: set[int] = set()
        if found is not None:
            index = siblings.index(found)
            reader = self._new_reader(found.file, live=False, offset=cp.offset)
            used.add(id(found))
            if reader is not None:
                self._queue.append(reader)
            for sib in siblings[index + 1 :]:
                if same_content(sib.head, found.head) or (
                    live is not None and sib.identity == live.identity
                ):
                    continue
                self._queue_sibling(sib, used)
            log_event(
                _log,
                logging.INFO,
                "source_resumed_rotated",
                path=self.path,
                file=found.path,
                offset=cp.offset,
                newer_files=len(self._queue) - 1,
            )
        else:
            self.stats.possible_data_loss += 1
            same_inode = live is not None and live.identity == cp.identity
            if same_inode:
                self.stats.truncations += 1
            event = "source_truncated_while_stopped" if same_inode else "source_checkpoint_missing"
            log_event(
                _log,
                logging.WARNING,
                event,
                path=self.path,
                checkpoint_path=cp.path,
                inode=cp.identity.inode,
                offset=cp.offset,
                possible_loss=True,
            )
            since = self._checkpoint_time
            for sib in siblings:
                if (
                    since is not None
                    and sib.mtime > since
                    and not (live is not None and sib.identity == live.identity)
                ):
                    self._queue_sibling(sib, used)
        for sib in siblings:
            if id(sib) not in used:
                sib.file.close()
        if live is not None:
            reader = self._new_reader(live, live=True)
            if reader is not None:
                self._queue.append(reader)

    @staticmethod
    def _find_checkpointed(siblings: list[Sibling], cp: Position) -> Sibling | None:
        newest_first = list(reversed(siblings))
        for sib in newest_first:
            if (
                sib.identity == cp.identity
                and head_matches(sib.head, cp)
                and (sib.file.compression is not None or sib.file.size() >= cp.offset)
            ):
                return sib
        if cp.fingerprint_bytes == 0:
            return None
        for sib in newest_first:
            if head_matches(sib.head, cp) and (
                sib.file.compression is not None or sib.file.size() >= cp.offset
            ):
                return sib
        return None

    def _queue_sibling(self, sib: Sibling, used: set[int]) -> None:
        used.add(id(sib))
        reader = self._new_reader(sib.file, live=False)
        if reader is not None:
            self._queue.append(reader)

    # -- following -------------------------------------------------------------

    def _check_live(self, cur: _Reader) -> None:
        try:
            st = cur.file.stat()
            size = st.st_size
            if size < cur.splitter.offset:
                self._truncated(cur, f"size {size} < offset {cur.splitter.offset}")
            elif cur.head and cur.file.head(len(cur.head)) != cur.head:
                self._truncated(cur, "head changed")
        except OSError as err:
            self._problem("source_read_failed", err)
            return
        try:
            path_identity: FileIdentity | None = FileIdentity.of(os.stat(self.path))
        except FileNotFoundError:
            path_identity = None
        except OSError as err:
            self._problem("source_stat_failed", err)
            return
        if path_identity is not None and path_identity != cur.file.identity:
            self._rotated(cur)
        elif path_identity is None and st.st_nlink == 0:
            # Deleted, not (yet) recreated: finish it like a rotated file.
            cur.live = False
            cur.last_growth = self._clock()
            log_event(_log, logging.INFO, "source_deleted", path=self.path)

    def _truncated(self, cur: _Reader, reason: str) -> None:
        old_head, old_consumed = cur.head, cur.splitter.consumed
        self.stats.truncations += 1
        self.stats.possible_data_loss += 1
        self._drop_partial(cur, "truncation")
        log_event(
            _log,
            logging.WARNING,
            "source_truncated",
            path=self.path,
            reason=reason,
            offset=old_consumed,
            possible_loss=True,
        )
        copy: Sibling | None = None
        if old_consumed > 0:
            siblings = list_siblings(self.path, self._sibling_unreadable)
            for sib in reversed(siblings):
                if (
                    sib.identity != cur.file.identity
                    and same_content(sib.head, old_head)
                    and (sib.file.compression is not None or sib.file.size() >= old_consumed)
                ):
                    copy = sib
                    break
            for sib in siblings:
                if sib is not copy:
                    sib.file.close()
        cur.file.seek(0)
        cur.splitter.reset(0)
        cur.head = cur.file.head(FINGERPRINT_BYTES)
        if copy is not None:
            reader = self._new_reader(copy.file, live=False, offset=old_consumed)
            if reader is not None:
                self._queue.insert(0, reader)
                log_event(
                    _log,
                    logging.INFO,
                    "source_truncated_copy_found",
                    path=self.path,
                    copy=copy.path,
                    offset=old_consumed,
                )

    def _rotated(self, cur: _Reader) -> None:
        cur.live = False
        cur.last_growth = self._clock()
        new_live = self._open_path()
        siblings = list_siblings(self.path, self._sibling_unreadable)
        index: int | None = None
        for i, sib in enumerate(siblings):
            if sib.identity == cur.file.identity or same_content(sib.head, cur.head):
                index = i
        used: set[int] = set()
        if index is not None:
            for sib in siblings[index + 1 :]:
                if same_content(sib.head, cur.head) or sib.identity == cur.file.identity:
                    continue
                if new_live is not None and sib.identity == new_live.identity:
                    continue
                self._queue_sibling(sib, used)
        for sib in siblings:
            if id(sib) not in used:
                sib.file.close()
        skipped_between = len(self._queue) - 1
        if new_live is not None:
            reader = self._new_reader(new_live, live=True)
            if reader is not None:
                self._queue.append(reader)
        self.stats.rotations += 1
        log_event(
            _log,
            logging.INFO,
            "source_rotated",
            path=self.path,
            old_inode=cur.file.identity.inode,
            new_inode=new_live.identity.inode if new_live is not None else None,
            files_between=skipped_between,
        )

    def _read(self, cur: _Reader, budget: int, out: list[LineChunk]) -> tuple[int, bool]:
        """Read ``cur`` up to ``budget`` bytes; return (bytes read, True if a read failed
        and should be retried)."""
        total = 0
        failed = False
        splitter = cur.splitter
        identity, path = cur.file.identity, cur.file.path
        while total < budget:
            try:
                data = cur.file.read(min(_CHUNK_BYTES, budget - total))
            except CONTENT_ERRORS as err:
                if cur.file.compression is not None:
                    # Corrupt or cut compressed data: what follows is lost.
                    self._unreadable(cur.file, err)
                    self.stats.possible_data_loss += 1
                    cur.live = False
                    splitter.flush()
                    cur.last_growth = float("-inf")
                else:
                    plain = err if isinstance(err, OSError) else OSError(str(err))
                    self._problem("source_read_failed", plain)
                    failed = True
                break
            if not data:
                break
            total += len(data)
            for start, lines in splitter.feed_segments(data):
                out.append(LineChunk(identity, path, start, lines))
        if total:
            cur.last_growth = self._clock()
            if len(cur.head) < FINGERPRINT_BYTES and cur.file.compression is None:
                try:
                    cur.head = cur.file.head(FINGERPRINT_BYTES)
                except OSError as err:
                    self._problem("source_read_failed", err)
        return total, failed

    def _finish(self, cur: _Reader, out: list[LineChunk]) -> bool:
        """Close a drained non-live file; False while its partial tail may still grow."""
        splitter = cur.splitter
        if splitter.pending_bytes:
            waited = self._clock() - cur.last_growth
            if cur.file.compression is None and waited < self._flush_secs:
                return False
            start = splitter.consumed
            tail = splitter.flush()
            if tail is not None:
                out.append(LineChunk(cur.file.identity, cur.file.path, start, [tail[0]], False))
                self.stats.partial_lines_flushed += 1
                log_event(
                    _log,
                    logging.WARNING,
                    "source_partial_line_flushed",
                    path=cur.file.path,
                    offset=start,
                    bytes=len(tail[0]),
                )
        else:
            splitter.flush()
        self._done = self._position_of(cur)
        cur.file.close()
        self._queue.pop(0)
        return True

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _position_of(reader: _Reader) -> Position:
        head = reader.head
        return Position(
            reader.file.path,
            reader.file.identity,
            reader.splitter.consumed,
            fingerprint(head),
            len(head),
        )

    def _drop_partial(self, cur: _Reader, reason: str) -> None:
        pending = cur.splitter.pending_bytes
        if pending:
            self.stats.partial_lines_dropped += 1
            log_event(
                _log,
                logging.WARNING,
                "source_partial_line_dropped",
                path=cur.file.path,
                reason=reason,
                bytes=pending,
            )

    def _too_long_callback(self, path: str) -> Callable[[int], None]:
        def too_long(line_offset: int) -> None:
            self.stats.lines_skipped_too_long += 1
            log_event(
                _log,
                logging.WARNING,
                "source_line_too_long",
                path=path,
                offset=line_offset,
                max_line_bytes=self.max_line_bytes,
            )

        return too_long

    def _cut_callback(self, path: str) -> Callable[[int, int], None]:
        def cut(line_offset: int, line_bytes: int) -> None:
            self.stats.lines_cut += 1
            log_event(
                _log,
                logging.WARNING,
                "source_line_cut",
                path=path,
                offset=line_offset,
                bytes=line_bytes,
                max_line_bytes=self.max_line_bytes,
            )

        return cut

    def _sibling_unreadable(self, path: str) -> None:
        self.stats.possible_data_loss += 1

    def _unreadable(self, file: ContentFile, err: BaseException) -> None:
        log_event(
            _log,
            logging.WARNING,
            "source_file_unreadable",
            path=file.path,
            compression=file.compression,
            reason=f"{type(err).__name__}: {err}",
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
