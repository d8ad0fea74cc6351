"""Counters shared by every pipeline stage.

One :class:`Stats` object is created per pipeline and handed to each stage, so the
numbers are kept in one place; later a ``/metrics`` endpoint exports them. All counters
are plain ints, incremented from the single pipeline thread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Running totals since the pipeline started.

    Attributes:
        lines_read: complete lines handed to the parser (blank lines included).
        parse_errors: lines rejected by the parser (see :class:`~alert_service.errors.ParseError`).
        lines_skipped_too_long: lines longer than the source's ``max_line_bytes``, skipped.
        truncations: times a followed file shrank below the read offset (restart at 0).
        rotations: times a followed path switched to a new file (new device/inode).
        partial_lines_dropped: unterminated tails discarded at rotation or truncation.
        events: events produced by the parser (one per result row).
        matches: (rule, event) pairs that matched; one per alert.
        sent: notifications accepted by a notifier (one per alert and notifier).
        failed: notifications given up on after the last attempt.
        retries: extra attempts made after a retryable failure.
    """

    lines_read: int = 0
    parse_errors: int = 0
    lines_skipped_too_long: int = 0
    truncations: int = 0
    rotations: int = 0
    partial_lines_dropped: int = 0
    events: int = 0
    matches: int = 0
    sent: int = 0
    failed: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a new ``{name: value}`` dict."""
        return asdict(self)
