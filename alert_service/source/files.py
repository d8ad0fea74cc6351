"""Open a results log, plain or compressed, as a stream of its content bytes.

Rotated results logs may be compressed: osquery's filesystem logger writes
``osqueryd.results.log.N.zst`` (zstd, N ≥ 2; plugins/logger/logrotate.h and
plugins/logger/tests/logrotate_tests.cpp), Fleet's lumberjack rotation writes
``<name>-<timestamp>.gz`` with ``filesystem.enable_log_compression``, logrotate writes
``.N.gz`` (docs/design/osquery-interfaces.md §4, "Filesystem logger"). Offsets of
compressed files count decompressed bytes; a compressed file is read from its start,
skipping to an offset by decompressing and discarding.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from typing import Any, BinaryIO, Final, cast

import zstandard

from alert_service.source.records import FINGERPRINT_BYTES, Compression, FileIdentity

__all__ = ["CONTENT_ERRORS", "ContentFile", "compression_of"]

CONTENT_ERRORS: Final = (OSError, EOFError, zlib.error, zstandard.ZstdError)
"""What reading a (compressed) file may raise: I/O errors and corrupt or truncated
compressed data (``gzip.BadGzipFile`` is an ``OSError``)."""

_SKIP_CHUNK: Final = 1024 * 1024
_READ_BYTES: Final = 64 * 1024


def compression_of(path: str) -> Compression | None:
    """Return the compression a file name implies: ``.zst`` → zstd, ``.gz`` → gzip."""
    if path.endswith(".zst"):
        return "zst"
    if path.endswith(".gz"):
        return "gz"
    return None


class ContentFile:
    """An open log file read sequentially as content bytes.

    The file descriptor stays open, so the content remains readable after the file is
    renamed or deleted (how rotation is survived, docs/design/following-logs.md,
    "Rotation by rename").

    Args:
        raw: an open unbuffered binary file (ownership passes to this object).
        path: the name it was opened by (for messages and checkpoints).
        compression: None for a plain file.

    Attributes:
        path: as given.
        compression: as given.
        identity: (device, inode) of ``raw``.
    """

    __slots__ = ("_raw", "_stream", "compression", "identity", "path")

    def __init__(self, raw: io.FileIO, path: str, compression: Compression | None) -> None:
        self._raw = raw
        self.path = path
        self.compression = compression
        self.identity = FileIdentity.of(os.fstat(raw.fileno()))
        self._stream: BinaryIO | None = None

    @classmethod
    def open(cls, path: str, compression: Compression | None = None) -> ContentFile:
        """Open ``path`` for reading.

        Raises:
            OSError: it cannot be opened (``FileNotFoundError`` when it is gone).
        """
        raw = open(path, "rb", buffering=0)  # noqa: SIM115 - kept open across polls
        try:
            return cls(raw, path, compression)
        except OSError:
            raw.close()
            raise

    def stat(self) -> os.stat_result:
        """``fstat()`` of the open file (sizes are on-disk sizes, compressed if so)."""
        return os.fstat(self._raw.fileno())

    def size(self) -> int:
        """Current size of the file on disk, bytes (compressed size for a compressed file)."""
        return os.fstat(self._raw.fileno()).st_size

    def head(self, limit: int = FINGERPRINT_BYTES) -> bytes:
        """Return the first ``limit`` content bytes (fewer if the content is shorter).

        For a plain file this is a positioned read that leaves the read position alone;
        a compressed file is decompressed from its start in a separate stream.

        Raises:
            OSError, EOFError, zlib.error, zstandard.ZstdError: see :data:`CONTENT_ERRORS`.
        """
        if self.compression is None:
            return os.pread(self._raw.fileno(), limit, 0)
        # Positioned reads of our own: the open file's read position is untouched.
        positioned = cast(BinaryIO, _PositionedReader(self._raw.fileno()))
        stream = _decompressor(positioned, self.compression)
        out = b""
        while len(out) < limit:
            piece = stream.read(limit - len(out))
            if not piece:
                break
            out += piece
        stream.close()
        return out

    def pread(self, size: int, offset: int) -> bytes:
        """Return up to ``size`` bytes of a plain file at ``offset``, position unchanged.

        Raises:
            OSError: the read fails.
        """
        return os.pread(self._raw.fileno(), size, offset)

    def seek(self, offset: int) -> int:
        """Continue reading at content byte ``offset``.

        Returns:
            The offset reached: ``offset``, or the content's end when it is shorter.

        Raises:
            See :data:`CONTENT_ERRORS`.
        """
        if self.compression is None:
            self._raw.seek(offset)
            return offset
        self._raw.seek(0)
        self._stream = _decompressor(self._raw, self.compression)
        done = 0
        while done < offset:
            piece = self._stream.read(min(_SKIP_CHUNK, offset - done))
            if not piece:
                break
            done += len(piece)
        return done

    def read(self, size: int) -> bytes:
        """Return up to ``size`` next content bytes; ``b""`` at the (current) end.

        Raises:
            See :data:`CONTENT_ERRORS`.
        """
        if self.compression is None:
            return self._raw.read(size) or b""
        if self._stream is None:
            self._raw.seek(0)
            self._stream = _decompressor(self._raw, self.compression)
        return self._stream.read(size)

    def close(self) -> None:
        """Close the file."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._raw.close()


class _PositionedReader(io.RawIOBase):
    """Read a file descriptor from offset 0 with ``pread``, leaving its position alone."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class _ZstdReader:
    """Sequential zstd decompression across frames that notices a cut-short file.

    ``zstandard``'s ``stream_reader`` returns end-of-file, without an error, when the
    compressed data stops inside a frame; a rotated log cut short would then lose its
    tail silently. Here that raises :class:`EOFError`, like :mod:`gzip` does.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._buffer = bytearray()
        self._ended = False

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size and not self._ended:
            data = self._raw.read(_READ_BYTES)
            if not data:
                self._ended = True
                if self._in_frame:
                    raise EOFError("zstd data ended inside a frame (file cut short)")
                break
            self._feed(data)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def _feed(self, data: bytes) -> None:
        while data:
            self._buffer += self._obj.decompress(data)
            self._in_frame = not self._obj.eof
            if not self._obj.eof:
                return
            data = self._obj.unused_data  # the next frame starts here
            self._obj = self._dctx.decompressobj()

    def close(self) -> None:
        self._buffer.clear()


def _decompressor(raw: BinaryIO, compression: Compression) -> BinaryIO:
    if compression == "gz":
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    return cast(BinaryIO, _ZstdReader(raw))
