"""Opening the state database and its schema.

One file (``state_dir/state.sqlite3``), WAL journal, ``synchronous=FULL``: a
committed transaction survives a crash or power loss. Tables:

- ``checkpoints``: where each source has been read up to.
- ``outbox``: one row per (alert, rule, destination), with its delivery state.
- ``active_rows``: rows each (host, query) has logged as added and not yet
  removed, to recognise old rows in a counter-0 re-log.
- ``silences``: dedup keys and when their silence ends.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "open_state"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,        -- the configured path
    path TEXT NOT NULL,             -- the file being read (the rotated name while draining it)
    dev INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,        -- bytes; the next line starts here
    fingerprint BLOB NOT NULL,      -- hash of the file's head
    updated_at REAL NOT NULL        -- seconds since the Unix epoch
);
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL,         -- stable id, sent as webhook-id
    rule TEXT NOT NULL,
    destination TEXT NOT NULL,      -- notifier name
    payload TEXT NOT NULL,          -- the alert as JSON (Alert.as_dict())
    created_at REAL NOT NULL,       -- seconds since the Unix epoch
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | dead | suppressed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,  -- seconds since the Unix epoch
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    PRIMARY KEY (alert_id, rule, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS active_rows (
    host TEXT NOT NULL,
    query TEXT NOT NULL,
    row_hash TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (host, query, row_hash)
);
CREATE TABLE IF NOT EXISTS silences (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL             -- seconds since the Unix epoch
);
"""


def open_state(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the state database at ``path``.

    Returns:
        a connection in autocommit mode (``isolation_level=None``): callers
        group writes with explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a state database
            of a known schema version.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    elif int(row[0]) != SCHEMA_VERSION:
        conn.close()
        raise sqlite3.DatabaseError(
            f"{path}: state schema version {row[0]}, this service knows {SCHEMA_VERSION}"
        )
    return conn
