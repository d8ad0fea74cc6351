"""Wire the stages: source → parse → match → baseline → outbox (or a dispatcher).

Two ways through :class:`Pipeline`:

* ``run`` (:meth:`Pipeline.run` / :meth:`Pipeline.poll_once`): follow every configured
  source (:class:`~alert_service.source.FileFollower`), parse and match each line, apply
  the baseline rules (:class:`~alert_service.state.baseline.BaselineTracker`) and
  **enqueue** the alerts in the state database's outbox. Each poll of one followed file
  is one SQLite transaction holding the alerts of its lines, the baseline changes and
  the file's checkpoint, so ``kill -9`` at any instant neither loses nor repeats an
  alert: what was committed is past the checkpoint, what was not is read again
  (docs/design/delivery.md, "Outbox"). The delivery
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

Every per-source and per-file concern (globs, rotation, staleness, missing sources,
the rewind after a failed commit, checkpoint expiry) lives in the source stage
(:class:`~alert_service.source.FileSources`, one kind of
:class:`~alert_service.source.SourceSet`), which hands the pipeline
:class:`~alert_service.source.Batch` es and takes back "committed" or "failed".
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import BinaryIO, Protocol

from alert_service.config import Config
from alert_service.deliver.dedup import silence_key
from alert_service.errors import ParseError, SourceError
from alert_service.logs import log_event
from alert_service.match import Alert, RuleSet
from alert_service.match.aggregate import Aggregator
from alert_service.match.columns import ColumnWatch
from alert_service.match.conditions import EventView, skim_view
from alert_service.notify.http import encode_json
from alert_service.parse import Event, glued_line_start, parse_line
from alert_service.parse.line import event_form_row, event_of_row
from alert_service.parse.row import typed_columns
from alert_service.source import (
    DEFAULT_MAX_LINE_BYTES,
    Batch,
    LineChunk,
    Position,
    SourceConfig,
    SourceLine,
    SourceSet,
    read_whole_chunks,
    read_whole_file,
)
from alert_service.source.kinds import build_sources
from alert_service.state.baseline import BaselineTracker
from alert_service.state.checkpoints import SqliteCheckpoints, save_checkpoint
from alert_service.state.db import StateConnection, open_state
from alert_service.state.outbox import enqueue_alerts
from alert_service.state.record import upgrade_records
from alert_service.state.windows import WindowStore
from alert_service.stats import Stats

__all__ = [
    "Dispatcher",
    "Pipeline",
    "PrintDispatcher",
]

_log = logging.getLogger(__name__)


class _NoCheckpoints:
    """Checkpoints of a pipeline without a state database (it cannot ``run``)."""

    def load(self, key: str) -> tuple[Position, float] | None:
        return None

    def expire(self, keep: Iterable[str], now: float) -> list[str]:
        return []


_NO_CHECKPOINTS = _NoCheckpoints()


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
        state: StateConnection | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_read_bytes_per_poll: int = 8 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.stats = stats if stats is not None else Stats()
        self.rules = RuleSet(config.rules)
        self.columns = ColumnWatch(config.rules)
        self.state = state
        self._clock = clock
        self._monotonic = monotonic
        self._max_read = max_read_bytes_per_poll
        self._packs = frozenset(config.known_packs)
        self._strict = config.strict_queries
        self._modes = config.rule_baseline
        self._baseline = (
            BaselineTracker(state, self._modes, self._matches_as_added, self.stats)
            if state is not None
            else None
        )
        self._replay_baseline: BaselineTracker | None = None
        self.pass_over_unmatched = True
        """Pass over rows no rule can match without building their event (the same
        alerts, counters and baseline either way; False: the reference path, for tests)."""
        self._replay_silences: set[str] = set()  # dedup keys "delivered" by replay
        # Each outbox record carries its rule's own dedup window (delivery's default
        # otherwise), so the workers never read the rules.
        named = [(r.name, r.dedup_window_secs) for r in config.rules]
        named += [(r.name, r.dedup_window_secs) for r in config.aggregate_rules]
        self._windows = {name: secs for name, secs in named if secs is not None}
        # Aggregation rules (match/aggregate.py): windows stored with each batch.
        self.aggregates = Aggregator(config.aggregate_rules, self.rules.iocs)
        self._window_store = (
            WindowStore(state, self.aggregates) if state is not None and self.aggregates else None
        )
        if state is not None:
            upgrade_records(state, self._packs, self._windows)
        self._sources: list[SourceSet] = build_sources(
            config.sources,
            SqliteCheckpoints(state, config.checkpoint_expiry_secs)
            if state is not None
            else _NO_CHECKPOINTS,
            self.stats,
            clock=clock,
            monotonic=monotonic,
            max_read_bytes_per_poll=max_read_bytes_per_poll,
            state=state,
        )

    # -- shared: one line ---------------------------------------------------------

    def _matches_as_added(self, event: Event) -> bool:
        return self.rules.matches_as(event, "added")

    def _process_chunk(
        self, chunk: LineChunk, baseline: BaselineTracker | None, out: list[Alert]
    ) -> None:
        """Parse and match every line of ``chunk``; append the alerts to ``out``.

        Raises:
            sqlite3.Error: the baseline could not be updated (the caller rolls back).
        """
        stats = self.stats
        packs = self._packs
        strict = self._strict
        match = self.rules.match
        aggregate = self.aggregates.observe if self.aggregates else None
        watch = self.columns
        observe = watch.observe
        settled = watch.settled
        missing = watch.missing
        events_seen = 0
        matches = 0
        # Rows no rule can match are passed over without building their event
        # (docs/design/alert-matching.md, "Passing over rows"): not with aggregation
        # rules (every event feeds their windows).
        quick = aggregate is None and self.pass_over_unmatched
        cannot_match = self.rules.cannot_match
        row_cannot_match = self.rules.row_cannot_match
        self.rules.maybe_refresh()  # row_cannot_match reads the index as it is
        of_row = EventView.of_row
        unmatched = baseline.unmatched if baseline is not None else None
        for index, raw in enumerate(chunk.lines):
            try:
                found = skimmed = None
                if quick:
                    # A line of the contract's columns is skimmed (no row built) and,
                    # when the index keeps it, decoded in full; any other line that
                    # event_form_row takes is passed over from its row.
                    skimmed = skim_view(raw)
                    if skimmed is not None:
                        name = skimmed.name
                        action = skimmed.action
                        if name in settled and row_cannot_match(skimmed):
                            events_seen += 1
                            # No open run (known to replay's private baseline): a
                            # line outside a counter-0 run has nothing to close.
                            if baseline is not None and (
                                skimmed.counter == 0 or baseline.open_runs
                            ):
                                baseline.unmatched(
                                    skimmed.host_identifier,
                                    name,
                                    action,
                                    skimmed.counter,
                                    skimmed.epoch,
                                    skimmed.unix_time,
                                )
                            continue
                    found = event_form_row(raw)
                if found is not None:
                    head, action, row = found
                    if (
                        skimmed is None
                        and head.name in settled
                        and cannot_match(of_row(row, action))
                    ):
                        events_seen += 1
                        if unmatched is not None:
                            unmatched(
                                head.host_identifier,
                                head.name,
                                action,
                                head.counter,
                                head.epoch,
                                head.unix_time,
                            )
                        continue
                    events = [event_of_row(head, action, row, packs)]  # decoded once
                else:
                    try:
                        events = parse_line(raw, packs, strict)
                    except ParseError as err:
                        if not raw.strip():
                            continue
                        events = self._recover_glued(chunk, index, raw, str(err))
                for event in events:
                    if event.name not in settled:
                        observe(event)
                    # With aggregation rules the typed row is built anyway: the rule
                    # index and the filters read it by C calls (EventView ``columns``).
                    view = (
                        EventView(event)
                        if aggregate is None
                        else EventView(event, columns=typed_columns(event.columns))
                    )
                    alerts = match(event, view)
                    if alerts:
                        matches += len(alerts)
                    if baseline is not None:
                        alerts = baseline.apply(event, alerts)
                    if alerts:
                        out += alerts
                    if aggregate is not None:
                        crossed = aggregate(event, view)
                        if crossed:
                            stats.aggregate_alerts += len(crossed)
                            out += crossed
                events_seen += len(events)
            except sqlite3.Error:
                raise
            except Exception as err:  # a bug must not stop the service on this line forever
                stats.processing_errors += 1
                self._line_failed(
                    "line_processing_failed", chunk, index, f"{type(err).__name__}: {err}"
                )
                _log.debug("line_processing_failed", exc_info=True)
        if watch.missing is not missing:
            stats.rule_columns_missing = watch.missing  # replaced whole: /health reads it
        stats.lines_read += len(chunk.lines)
        stats.aggregate_events_dropped = self.aggregates.dropped
        if self._window_store is None and aggregate is not None:
            self.aggregates.discard_changes()  # nothing stores them (replay, no state)
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
        where = chunk.location(index)
        if "offset" in where:  # a file: the byte where the complete line starts
            where["line_offset"] = chunk.location(index, cut)["offset"]
        stats.malformed_fragments += 1
        log_event(
            _log,
            logging.WARNING,
            "line_fragment_skipped",
            **where,
            fragment_bytes=cut,
            reason="an unterminated line (a writer stopped mid-line) precedes this line",
        )
        try:
            return parse_line(raw[cut:], self._packs, self._strict)
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

    def _line_failed(
        self, event: str, chunk: LineChunk, index: int, reason: str, skip: int = 0
    ) -> None:
        log_event(
            _log,
            logging.WARNING,
            event,
            **chunk.location(index, skip),
            reason=reason,
        )

    # -- replay --------------------------------------------------------------------

    def _replay_tracker(self) -> BaselineTracker:
        if self._replay_baseline is None:
            memory = open_state(":memory:")
            self._replay_baseline = BaselineTracker(
                memory, self._modes, self._matches_as_added, self.stats, exclusive=True
            )
        return self._replay_baseline

    def process_line(self, line: SourceLine) -> int:
        """Parse one line, match its events and dispatch the alerts (``replay``).

        Baseline runs are judged against the rows seen by this pipeline's earlier
        :meth:`process_line` and :meth:`replay` calls (kept in memory).

        Returns:
            The number of alerts dispatched (0 for blank or malformed lines).

        Raises:
            ValueError: the pipeline has no dispatcher.
        """
        chunk = LineChunk(line.identity, line.path, line.start, [line.line], line.terminated)
        return self._replay_chunk(chunk)

    def _replay_chunk(self, chunk: LineChunk) -> int:
        """Process the lines of ``chunk`` and dispatch their alerts, digests last."""
        if self.dispatcher is None:
            raise ValueError("process_line needs a dispatcher")
        tracker = self._replay_tracker()
        alerts: list[Alert] = []
        self._process_chunk(chunk, tracker, alerts)
        alerts += tracker.take_digests()
        sent = 0
        for alert in alerts:
            destinations = self._replay_dedup(alert)
            if destinations:
                self.dispatcher.dispatch(
                    alert if destinations == alert.notify else replace(alert, notify=destinations)
                )
                sent += 1
        return sent

    def _replay_dedup(self, alert: Alert) -> tuple[str, ...]:
        """The destinations ``run`` would deliver ``alert`` to, after dedup.

        As the delivery workers do (:mod:`alert_service.deliver.dedup`): a repeat of
        an alert already delivered to a destination (same dedup key) within the
        rule's window (``dedup_window_secs``, else the delivery default; 0 = off) is
        suppressed. ``run`` reading the same log delivers within seconds, inside any
        window, so within one replay every repeat is suppressed. Each suppression is
        counted (``suppressed``) and logged as ``alert_suppressed``.
        """
        window = self._windows.get(alert.rule, self.config.delivery.dedup_window_secs)
        if window <= 0:
            return alert.notify
        payload = Alert.as_dict(alert)
        keep: list[str] = []
        dropped: list[str] = []
        for destination in alert.notify:
            key = silence_key(destination, payload)
            if key in self._replay_silences:
                dropped.append(destination)
            else:
                self._replay_silences.add(key)
                keep.append(destination)
        if dropped:
            self.stats.suppressed += len(dropped)
            log_event(
                _log,
                logging.INFO,
                "alert_suppressed",
                id=alert.id,
                rule=alert.rule,
                destinations=dropped,
                reason="repeat within the dedup window",
            )
        return tuple(keep)

    def replay(self, paths: Iterable[str]) -> list[str]:
        """Read each file whole (``.zst``/``.gz`` decompressed) and process its lines.

        The lines are processed in the chunks :func:`~alert_service.source.read_whole_chunks`
        reads (up to 256 KiB each), as ``run`` processes what one poll read: a
        ``digest`` rule's baseline digest holds the new rows of one chunk.

        With aggregation rules, the files are taken in the order of their first
        line's ``unixTime`` (rotated logs given in any order are then read oldest
        first; osquery writes each file in time order), so windows see time move
        forward.

        Args:
            paths: results logs, processed in order (see above).

        Returns:
            The paths that could not be read (each logged); empty on full success.

        Raises:
            ValueError: the pipeline has no dispatcher.
        """
        if self.dispatcher is None:
            raise ValueError("replay needs a dispatcher")
        files = (s for s in self.config.sources if isinstance(s, SourceConfig))
        max_line = max((s.max_line_bytes for s in files), default=0)
        failed: list[str] = []
        ordered = list(paths)
        if self.aggregates:
            limit = max_line or DEFAULT_MAX_LINE_BYTES
            ordered.sort(key=lambda path: self._first_time(path, limit))
        for path in ordered:
            try:
                for chunk in read_whole_chunks(
                    path, max_line_bytes=max_line or DEFAULT_MAX_LINE_BYTES, stats=self.stats
                ):
                    self._replay_chunk(chunk)
            except SourceError as err:
                failed.append(path)
                log_event(_log, logging.ERROR, "replay_source_failed", path=path, reason=str(err))
        return failed

    def _first_time(self, path: str, max_line_bytes: int) -> int:
        """``unixTime`` of the first parsable line of ``path`` (0 when none or unreadable)."""
        try:
            for line in read_whole_file(path, max_line_bytes=max_line_bytes, stats=Stats()):
                try:
                    events = parse_line(line.line, self._packs)
                except ParseError:
                    continue
                if events:
                    return events[0].unix_time
        except SourceError:
            return 0
        return 0

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
        """Poll every source that is due once, committing one transaction per batch.

        Returns:
            Seconds until the next source is due (0 when one has more to read now).

        Raises:
            ValueError: the pipeline has no state database.
        """
        conn = self.state
        if conn is None:
            raise ValueError("run needs a state database")
        for sources in self._sources:
            for batch in sources.poll():
                try:
                    self._commit(conn, batch)
                except sqlite3.Error as err:
                    self.stats.transaction_failures += 1
                    if self._baseline is not None:
                        self._baseline.forget()
                    if self._window_store is not None:
                        self._window_store.reload()
                    sources.failed(batch, err)
                else:
                    sources.committed(batch)
        return min(sources.pause() for sources in self._sources)

    def close(self) -> None:
        """Close every followed input (the pipeline may poll again afterwards)."""
        for sources in self._sources:
            sources.close()

    def _commit(self, conn: StateConnection, batch: Batch) -> None:
        """Parse and match ``batch`` and store its alerts and position in one transaction.

        Raises:
            sqlite3.Error: the transaction failed and was rolled back.
        """
        baseline = self._baseline
        alerts: list[Alert] = []
        wall = self._clock()
        position = batch.position
        conn.execute("BEGIN IMMEDIATE")
        try:
            for chunk in batch.chunks:
                self._process_chunk(chunk, baseline, alerts)
            if baseline is not None:
                alerts += baseline.take_digests()
            if self._window_store is not None:
                self._window_store.save(wall)
            inserted = enqueue_alerts(conn, alerts, wall, self._windows)
            if position is not None:
                save_checkpoint(conn, batch.key, position, wall)
            if batch.fence is not None:
                batch.fence(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
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
                path=batch.key,
                rows=wanted - inserted,
            )
        log_event(
            _log,
            logging.DEBUG,
            "batch_committed",
            path=batch.key,
            file=position.path if position is not None else None,
            offset=position.offset if position is not None else None,
            lines=sum(len(chunk.lines) for chunk in batch.chunks),
            alerts=len(alerts),
            outbox_rows=inserted,
        )
