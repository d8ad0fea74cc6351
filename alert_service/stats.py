"""Counters and gauges shared by every pipeline stage.

One :class:`Stats` object is created per pipeline and handed to each stage, so the
numbers are kept in one place; the ``/metrics`` endpoint exports them (counters as
``*_total``, gauges as they are). All values are plain numbers, updated from the
single pipeline thread (delivery workers update their own counters).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["GAUGES", "Stats"]

GAUGES = frozenset(
    {
        "stale_sources",
        "sources_followed",
        "sources_missing",
        "sources_unreadable",
        "partitions_owned",
    }
)
"""Names of the :class:`Stats` fields that are gauges (may go down); the other int
fields are counters."""


@dataclass(slots=True)
class Stats:
    """Running totals since the pipeline started, plus a few gauges.

    Attributes:
        lines_read: complete lines handed to the parser (blank lines included).
        parse_errors: lines rejected by the parser (see :class:`~alert_service.errors.ParseError`).
        malformed_fragments: unterminated fragments (a writer stopped mid-line) found
            glued in front of a complete line, which is read; logged as
            ``line_fragment_skipped``. Not counted in ``parse_errors``.
        processing_errors: lines skipped because matching them raised an unexpected
            error (a bug; logged as ``line_processing_failed``).
        lines_skipped_too_long: lines longer than the source's ``max_line_bytes`` even
            after their long texts were cut, skipped.
        lines_cut: lines longer than ``max_line_bytes`` read after their long texts
            were cut (each ending in ``…[cut N bytes]``); logged as ``source_line_cut``.
        truncations: times a followed file shrank below the read offset or had its head
            replaced (copytruncate), while running or while stopped; reading restarted at 0.
        rotations: times a followed path switched to a new file (new device/inode).
        possible_data_loss: times lines may have been lost: a truncation (lines written
            between logrotate's copy and truncate), a checkpointed file found nowhere at
            start, corrupt compressed data.
        partial_lines_dropped: unterminated tails discarded at a truncation.
        partial_lines_flushed: unterminated last lines of finished (rotated, deleted,
            compressed) files taken as lines after ``partial_line_flush_secs``.
        events: events produced by the parser (one per result row).
        matches: (rule, event) pairs that matched; one per alert.
        alerts_enqueued: outbox rows inserted by ``run`` (one per alert and notifier;
            a re-read line's alerts are not inserted twice).
        transactions: state-database transactions committed by ``run`` (each holds a
            batch of lines' alerts and the source checkpoint).
        transaction_failures: transactions rolled back (the lines are read again).
        baseline_rows_known: rows re-logged by a ``counter`` 0 run that were already
            active, so not alerted again.
        baseline_rows_new: matching rows of a ``counter`` 0 run that were not known.
        baseline_rows_suppressed: new baseline rows of rules with ``baseline: none``.
        baseline_digests: digest alerts made for rules with ``baseline: digest``.
        aggregate_alerts: crossings of aggregation and beacon rules (one per group
            and window).
        aggregate_events_dropped: events of a new group dropped because its rule
            held ``max_groups`` groups whose windows were all still open.
        staleness_warnings: times a source went ``stale_after_secs`` without a line.
        stale_sources: gauge: configured sources currently stale.
        sources_followed: gauge: files currently open and followed (a glob may match
            several); a configured path that does not exist is not counted.
        sources_missing: gauge: configured sources whose file does not exist (a
            ``glob`` matching no file); logged as ``source_missing``.
        sources_unreadable: gauge: configured sources whose file (or a glob's
            directory) exists but cannot be opened, e.g. permission denied; logged as
            ``source_unreadable``.
        sent: notifications accepted by a notifier (one per alert and notifier).
        failed: notifications given up on after the last attempt.
        retries: extra attempts made after a retryable failure.
        suppressed: outbox rows not sent because their dedup key was silenced.
        digests: digest messages delivered, each folding several alerts.
        source_last_line_time: per configured source (its ``path`` or ``glob``), when it
            last produced a line, seconds since the Unix epoch (0 = never); a gauge
            per source, not included in :meth:`as_dict`.
        messages_received: messages fetched from stream sources (``nats``), each
            holding one result line (or several, split at newlines).
        messages_undecodable: stream messages whose payload could not be decoded
            (unknown ``Content-Encoding``, corrupt compressed data); acknowledged
            and logged as ``message_undecodable``.
        messages_redelivered_skipped: stream messages delivered again after their
            batch was committed (its acknowledgement was lost); acknowledged without
            processing them again.
        nats_reader_restarts: times the NATS reader process
            (:mod:`~alert_service.source.nats_reader`) failed — exited, stopped
            answering, or sent a garbled frame — and was killed to be replaced; each
            is logged as ``nats_reader_failed``.
        partitions_owned: gauge: stream consumers (partitions) this instance reads now.
        source_leases: per consumer this instance reads, ``"token N"`` (the lease's
            fencing token) or ``"local"`` (no shared state); ``/health`` shows it.
        source_pending_messages: per stream source, messages in the stream not yet
            delivered to its consumer (the consumer lag) as of the last fetch; a gauge
            per source, not included in :meth:`as_dict`.
        source_problems: configured source (its ``path`` or ``glob``) → why it cannot
            be read now, ``"missing: no such file"`` or ``"unreadable: Permission
            denied (EACCES)"``; only sources with a problem. ``/health`` shows it. The
            pipeline replaces the dict as a whole, so other threads may read it.
        rule_columns_missing: ``(query name, column)`` → rules needing that column,
            for each column the query's rows lack
            (:class:`~alert_service.match.columns.ColumnWatch`); ``/health`` shows it
            and the ``rule_column_missing`` gauge counts it. Replaced as a whole.
    """

    lines_read: int = 0
    parse_errors: int = 0
    malformed_fragments: int = 0
    processing_errors: int = 0
    lines_skipped_too_long: int = 0
    lines_cut: int = 0
    truncations: int = 0
    rotations: int = 0
    possible_data_loss: int = 0
    partial_lines_dropped: int = 0
    partial_lines_flushed: int = 0
    events: int = 0
    matches: int = 0
    alerts_enqueued: int = 0
    transactions: int = 0
    transaction_failures: int = 0
    baseline_rows_known: int = 0
    baseline_rows_new: int = 0
    baseline_rows_suppressed: int = 0
    baseline_digests: int = 0
    aggregate_alerts: int = 0
    aggregate_events_dropped: int = 0
    staleness_warnings: int = 0
    stale_sources: int = 0
    sources_followed: int = 0
    sources_missing: int = 0
    sources_unreadable: int = 0
    sent: int = 0
    failed: int = 0
    retries: int = 0
    suppressed: int = 0
    digests: int = 0
    messages_received: int = 0
    messages_undecodable: int = 0
    messages_redelivered_skipped: int = 0
    nats_reader_restarts: int = 0
    partitions_owned: int = 0
    source_last_line_time: dict[str, float] = field(default_factory=dict)
    source_problems: dict[str, str] = field(default_factory=dict)
    source_pending_messages: dict[str, int] = field(default_factory=dict)
    source_leases: dict[str, str] = field(default_factory=dict)
    rule_columns_missing: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        """Return the int counters and gauges as a new ``{name: value}`` dict."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), int)
        }
