"""Source stage: read osquery result logs as complete lines.

Public API:

* :class:`FileFollower` — follow a growing log (``run``), across rotation/truncation;
* :func:`read_whole_file` — read a log from start to end (``replay``);
* :class:`SourceLine`, :class:`FileIdentity` — what both yield;
* :class:`LineSplitter` — the shared line cutter with its length cap.
"""

from __future__ import annotations

from alert_service.source.follower import DEFAULT_POLL_INTERVAL_SECS, FileFollower
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter
from alert_service.source.records import FileIdentity, SourceLine, StartAt
from alert_service.source.whole import read_whole_file

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_POLL_INTERVAL_SECS",
    "FileFollower",
    "FileIdentity",
    "LineSplitter",
    "SourceLine",
    "StartAt",
    "read_whole_file",
]
