"""The source stage's configuration: one item of ``sources``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alert_service.source.follower import (
    DEFAULT_PARTIAL_LINE_FLUSH_SECS,
    DEFAULT_POLL_INTERVAL_SECS,
)
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES
from alert_service.source.records import StartAt

__all__ = ["DEFAULT_STALE_AFTER_SECS", "SourceConfig"]

DEFAULT_STALE_AFTER_SECS = 300.0
"""Default ``sources[].stale_after_secs`` (5 minutes)."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One results log to follow (an item of ``sources``).

    Attributes:
        path: the log file, e.g. ``/var/log/osquery/osqueryd.results.log``; with
            ``glob`` true, a pattern naming several live logs (each followed alone).
        glob: True when the entry was given as ``glob:`` instead of ``path:``.
        start_at: ``end`` (default) skips what the file holds when ``run`` starts
            for the first time (no checkpoint); ``beginning`` reads it, after
            every rotated generation of it still on disk (oldest first). Files
            appearing later are always read whole; with a checkpoint, ``run``
            resumes where it stopped.
        max_line_bytes: longest accepted line, bytes (default 1 MiB).
        poll_interval_secs: pause between polls, seconds (default 0.25).
        partial_line_flush_secs: how long the unterminated last line of a finished
            (rotated/deleted) file may stay unchanged before it is taken as a line,
            seconds (default 5).
        stale_after_secs: a source with no new line for this long logs
            ``source_stale`` and counts in the ``stale_sources`` gauge, seconds
            (default 300).
    """

    path: str
    start_at: StartAt = "end"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    poll_interval_secs: float = DEFAULT_POLL_INTERVAL_SECS
    glob: bool = False
    partial_line_flush_secs: float = DEFAULT_PARTIAL_LINE_FLUSH_SECS
    stale_after_secs: float = DEFAULT_STALE_AFTER_SECS

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> SourceConfig:
        """Build from one validated item of ``sources`` (``path:`` or ``glob:``)."""
        pattern = raw.get("glob")
        return cls(
            path=raw["path"] if pattern is None else pattern,
            glob=pattern is not None,
            start_at=raw.get("start_at", "end"),
            max_line_bytes=raw.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES),
            poll_interval_secs=float(raw.get("poll_interval_secs", DEFAULT_POLL_INTERVAL_SECS)),
            partial_line_flush_secs=float(
                raw.get("partial_line_flush_secs", DEFAULT_PARTIAL_LINE_FLUSH_SECS)
            ),
            stale_after_secs=float(raw.get("stale_after_secs", DEFAULT_STALE_AFTER_SECS)),
        )
