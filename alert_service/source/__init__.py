"""Source stage: read osquery and Fleet result logs as complete lines.

Public API:

* :class:`FileSources` — every configured file source as the pipeline sees it:
  :class:`Batch` es of lines out, "committed"/"failed" back (:class:`SourceSet` is the
  interface another kind of source implements), configured by :class:`SourceConfig`;
* :class:`FileFollower` — follow a growing log (``run``) across rotation (osquery
  ``.1``/``.N.zst``, Fleet ``-<timestamp>[.gz]``), truncation and restarts, resuming
  from a :class:`Position` (the checkpoint);
* :func:`read_whole_file` — read a log from start to end, plain or compressed
  (``replay``); :func:`read_whole_chunks` — the same lines as chunks;
* :func:`expand_glob` — the live logs a ``glob`` source names;
  :func:`glob_base_error` — why its directory cannot be listed;
* :class:`LineChunk`, :class:`SourceLine`, :class:`FileIdentity`, :class:`Position` —
  what they yield and store;
* :class:`LineSplitter` — the shared line cutter with its length cap.
"""

from __future__ import annotations

from alert_service.source.config import DEFAULT_STALE_AFTER_SECS, SourceConfig
from alert_service.source.files import ContentFile, compression_of
from alert_service.source.follower import (
    DEFAULT_PARTIAL_LINE_FLUSH_SECS,
    DEFAULT_POLL_INTERVAL_SECS,
    FileFollower,
    head_matches,
)
from alert_service.source.globs import expand_glob, glob_base_error
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter
from alert_service.source.manager import (
    CHECKPOINT_EXPIRY_INTERVAL_SECS,
    SOURCE_PROBLEM_REPEAT_SECS,
    Batch,
    CheckpointStore,
    FileSources,
    SourceSet,
)
from alert_service.source.records import (
    FINGERPRINT_BYTES,
    FileIdentity,
    LineChunk,
    Position,
    SourceLine,
    StartAt,
    fingerprint,
)
from alert_service.source.rotation import is_rotated_name, list_siblings
from alert_service.source.whole import read_whole_chunks, read_whole_file

__all__ = [
    "CHECKPOINT_EXPIRY_INTERVAL_SECS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_PARTIAL_LINE_FLUSH_SECS",
    "DEFAULT_POLL_INTERVAL_SECS",
    "DEFAULT_STALE_AFTER_SECS",
    "FINGERPRINT_BYTES",
    "SOURCE_PROBLEM_REPEAT_SECS",
    "Batch",
    "CheckpointStore",
    "ContentFile",
    "FileFollower",
    "FileIdentity",
    "FileSources",
    "LineChunk",
    "LineSplitter",
    "Position",
    "SourceConfig",
    "SourceLine",
    "SourceSet",
    "StartAt",
    "compression_of",
    "expand_glob",
    "fingerprint",
    "glob_base_error",
    "head_matches",
    "is_rotated_name",
    "list_siblings",
    "read_whole_chunks",
    "read_whole_file",
]
