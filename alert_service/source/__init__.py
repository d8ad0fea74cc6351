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

Every name is imported from its module on first use (PEP 562,
:func:`alert_service.lazy.lazy_getattr`): the NATS reader process
(:mod:`alert_service.source.nats_reader`) imports modules of this package and
should not pay at its start for the file sources, which it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alert_service.lazy import lazy_getattr

if TYPE_CHECKING:
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

_LAZY = {
    "Batch": "alert_service.source.manager",
    "CHECKPOINT_EXPIRY_INTERVAL_SECS": "alert_service.source.manager",
    "CheckpointStore": "alert_service.source.manager",
    "ContentFile": "alert_service.source.files",
    "DEFAULT_MAX_LINE_BYTES": "alert_service.source.lines",
    "DEFAULT_PARTIAL_LINE_FLUSH_SECS": "alert_service.source.follower",
    "DEFAULT_POLL_INTERVAL_SECS": "alert_service.source.follower",
    "DEFAULT_STALE_AFTER_SECS": "alert_service.source.config",
    "FINGERPRINT_BYTES": "alert_service.source.records",
    "FileFollower": "alert_service.source.follower",
    "FileIdentity": "alert_service.source.records",
    "FileSources": "alert_service.source.manager",
    "LineChunk": "alert_service.source.records",
    "LineSplitter": "alert_service.source.lines",
    "Position": "alert_service.source.records",
    "SOURCE_PROBLEM_REPEAT_SECS": "alert_service.source.manager",
    "SourceConfig": "alert_service.source.config",
    "SourceLine": "alert_service.source.records",
    "SourceSet": "alert_service.source.manager",
    "StartAt": "alert_service.source.records",
    "compression_of": "alert_service.source.files",
    "expand_glob": "alert_service.source.globs",
    "fingerprint": "alert_service.source.records",
    "glob_base_error": "alert_service.source.globs",
    "head_matches": "alert_service.source.follower",
    "is_rotated_name": "alert_service.source.rotation",
    "list_siblings": "alert_service.source.rotation",
    "read_whole_chunks": "alert_service.source.whole",
    "read_whole_file": "alert_service.source.whole",
}

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


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
