"""Source checkpoints in the state database (table ``checkpoints``).

One row per followed live path (a configured ``path``, or each file a ``glob``
matches): the :class:`~alert_service.source.records.Position` reached — the file's
(device, inode), the offset of the next unread line and the fingerprint of the file's
head (docs/design/following-logs.md). The pipeline writes it with
:func:`save_checkpoint` in the same transaction as the outbox rows of the lines before
it. Rows of paths no longer followed expire after a grace
(:func:`expire_checkpoints`), so a glob over changing names does not grow the table
forever.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from alert_service.source.records import FileIdentity, Position
from alert_service.state.db import StateConnection

__all__ = [
    "STREAM_KEY_PREFIX",
    "SqliteCheckpoints",
    "StoredCheckpoint",
    "delete_checkpoint",
    "expire_checkpoints",
    "load_checkpoint",
    "load_checkpoints",
    "save_checkpoint",
]

_TWO_63 = 1 << 63
_TWO_64 = 1 << 64


def _to_db(value: int) -> int:
    """Store an unsigned 64-bit ``st_dev``/``st_ino`` in SQLite's signed INTEGER."""
    return value - _TWO_64 if value >= _TWO_63 else value


def _from_db(value: int) -> int:
    return value + _TWO_64 if value < 0 else value


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as stored.

    Attributes:
        source: the live path it belongs to.
        position: where reading stood.
        updated_at: when it was written, seconds since the Unix epoch.
    """

    source: str
    position: Position
    updated_at: float


_COLUMNS = "source, path, dev, inode, offset, fingerprint, fingerprint_bytes, updated_at"


def _row(row: tuple[str, str, int, int, int, bytes, int, float]) -> StoredCheckpoint:
    source, path, dev, inode, offset, fp, fp_bytes, updated = row
    identity = FileIdentity(_from_db(dev), _from_db(inode))
    return StoredCheckpoint(source, Position(path, identity, offset, bytes(fp), fp_bytes), updated)


def load_checkpoint(conn: StateConnection, source: str) -> StoredCheckpoint | None:
    """Return the checkpoint of ``source``, or None when there is none."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM checkpoints WHERE source = ?", (source,)).fetchone()
    return _row(row) if row is not None else None


def load_checkpoints(conn: StateConnection) -> dict[str, StoredCheckpoint]:
    """Return every stored checkpoint by source."""
    return {row[0]: _row(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM checkpoints")}


def save_checkpoint(conn: StateConnection, source: str, position: Position, now: float) -> None:
    """Insert or replace the checkpoint of ``source``.

    Call it inside the transaction that enqueues the alerts of the lines before
    ``position`` (it does not begin or commit one).

    Args:
        conn: the state database.
        source: the live path followed.
        position: the follower's :meth:`~alert_service.source.FileFollower.position`.
        now: seconds since the Unix epoch.
    """
    conn.execute(
        f"INSERT INTO checkpoints ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (source) DO UPDATE SET path = excluded.path, dev = excluded.dev,"
        " inode = excluded.inode, offset = excluded.offset,"
        " fingerprint = excluded.fingerprint,"
        " fingerprint_bytes = excluded.fingerprint_bytes, updated_at = excluded.updated_at",
        (
            source,
            position.path,
            _to_db(position.identity.dev),
            _to_db(position.identity.inode),
            position.offset,
            position.fingerprint,
            position.fingerprint_bytes,
            now,
        ),
    )


def delete_checkpoint(conn: StateConnection, source: str) -> bool:
    """Delete the checkpoint of ``source``; True when there was one."""
    return conn.execute("DELETE FROM checkpoints WHERE source = ?", (source,)).rowcount > 0


STREAM_KEY_PREFIX = "nats:"
"""Checkpoint keys of stream sources (``nats:<stream>/<consumer>``)."""


def expire_checkpoints(
    conn: StateConnection, keep: Iterable[str], now: float, expiry_secs: float
) -> list[str]:
    """Delete checkpoints not in ``keep`` that were last written over ``expiry_secs`` ago.

    Checkpoints of stream sources (keys starting with :data:`STREAM_KEY_PREFIX`) are
    never expired: an idle partition keeps its place in the stream, which still
    holds the messages after it.

    Args:
        conn: the state database (runs in its own implicit statement; no transaction
            needed).
        keep: sources currently followed; never expired.
        now: seconds since the Unix epoch.
        expiry_secs: grace after the last write, seconds.

    Returns:
        The sources whose checkpoints were deleted.
    """
    kept = set(keep)
    old = [
        row[0]
        for row in conn.execute(
            "SELECT source FROM checkpoints WHERE updated_at < ?", (now - expiry_secs,)
        )
        if row[0] not in kept and not row[0].startswith(STREAM_KEY_PREFIX)
    ]
    for source in old:
        conn.execute(
            "DELETE FROM checkpoints WHERE source = ? AND updated_at < ?",
            (source, now - expiry_secs),
        )
    return old


class SqliteCheckpoints:
    """The checkpoints table as the source stage reads it at start and expires it.

    Args:
        conn: the state database.
        expiry_secs: grace after a checkpoint's last write before a file no longer
            followed loses it, seconds (``checkpoint_expiry_secs``).
    """

    def __init__(self, conn: StateConnection, expiry_secs: float) -> None:
        self.conn = conn
        self.expiry_secs = expiry_secs

    def load(self, key: str) -> tuple[Position, float] | None:
        """The stored position of ``key`` and when it was written (Unix seconds)."""
        stored = load_checkpoint(self.conn, key)
        return (stored.position, stored.updated_at) if stored is not None else None

    def expire(self, keep: Iterable[str], now: float) -> list[str]:
        """Delete expired checkpoints not in ``keep`` (:func:`expire_checkpoints`).

        Raises:
            sqlite3.Error: the database could not be read or written.
        """
        return expire_checkpoints(self.conn, keep, now, self.expiry_secs)
