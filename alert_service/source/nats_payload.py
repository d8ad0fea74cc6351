"""Decode a NATS message payload after its ``Content-Encoding`` header."""

from __future__ import annotations

import gzip
import zlib

import zstandard

__all__ = ["PayloadError", "decode_payload"]


class PayloadError(ValueError):
    """A message payload could not be decoded (its text says why)."""


_ZSTD = zstandard.ZstdDecompressor()
_MAX_DECODED_BYTES = 64 * 1024 * 1024


def decode_payload(data: bytes, encoding: str | None) -> bytes:
    """Return the payload's bytes after its ``Content-Encoding``.

    Args:
        data: the message payload.
        encoding: the ``Content-Encoding`` header (None, ``identity``, ``gzip``,
            ``zstd``; case-insensitive).

    Raises:
        PayloadError: unknown encoding, corrupt data, or more than 64 MiB decoded.
    """
    name = (encoding or "identity").strip().lower()
    try:
        if name == "identity":
            return data
        if name in ("gzip", "x-gzip"):
            out = gzip.decompress(data)
        elif name == "zstd":
            out = _ZSTD.decompressobj().decompress(data)
        else:
            raise PayloadError(f"unknown Content-Encoding {encoding!r}")
    except (OSError, EOFError, zlib.error, zstandard.ZstdError) as err:
        raise PayloadError(f"corrupt {name} payload: {err}") from err
    if len(out) > _MAX_DECODED_BYTES:
        raise PayloadError("decoded payload over 64 MiB")
    return out
