"""Read a results log whole (for ``replay``), plain or compressed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from alert_service.errors import SourceError
from alert_service.logs import log_event
from alert_service.source.files import CONTENT_ERRORS, ContentFile, compression_of
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter
from alert_service.source.records import SourceLine
from alert_service.stats import Stats

__all__ = ["read_whole_file"]

_CHUNK_BYTES = 256 * 1024
_log = logging.getLogger(__name__)


def read_whole_file(
    path: str,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    stats: Stats | None = None,
) -> Iterator[SourceLine]:
    """Yield every line of ``path`` from offset 0 to its current end.

    Unlike :class:`~alert_service.source.follower.FileFollower`, a last line without a
    ``\\n`` is returned too (``terminated`` False), since the file is taken as
    finished. Names ending in ``.zst`` (osquery's rotated logs) or ``.gz``
    (Fleet/lumberjack, logrotate) are decompressed; offsets then count decompressed
    bytes.

    Args:
        path: a results log.
        max_line_bytes: longest accepted line in bytes, newline excluded; longer lines
            have their long texts cut (``stats.lines_cut``), and are skipped when still
            too long (``stats.lines_skipped_too_long``).
        stats: counters to update; may be None.

    Yields:
        :class:`~alert_service.source.records.SourceLine` in file order.

    Raises:
        SourceError: the file cannot be opened or read, or its compressed data is
            corrupt (lines before the damage have been yielded).
    """
    counters = stats if stats is not None else Stats()

    def too_long(offset: int) -> None:
        counters.lines_skipped_too_long += 1
        log_event(
            _log,
            logging.WARNING,
            "source_line_too_long",
            path=path,
            offset=offset,
            max_line_bytes=max_line_bytes,
        )

    def cut(offset: int, line_bytes: int) -> None:
        counters.lines_cut += 1
        log_event(
            _log,
            logging.WARNING,
            "source_line_cut",
            path=path,
            offset=offset,
            bytes=line_bytes,
            max_line_bytes=max_line_bytes,
        )

    splitter = LineSplitter(max_line_bytes, on_too_long=too_long, on_cut=cut)
    try:
        file = ContentFile.open(path, compression_of(path))
    except OSError as err:
        raise SourceError(f"{path}: cannot read: {err.strerror or err}") from err
    identity = file.identity
    try:
        while True:
            try:
                chunk = file.read(_CHUNK_BYTES)
            except CONTENT_ERRORS as err:
                raise SourceError(f"{path}: cannot read: {err}") from err
            if not chunk:
                break
            for line, end in splitter.feed(chunk):
                yield SourceLine(line, identity, end, path)
    finally:
        file.close()
    tail = splitter.flush()
    if tail is not None:
        yield SourceLine(tail[0], identity, tail[1], path, terminated=False)
