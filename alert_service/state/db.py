"""Opening the state database and its schema.

One file (``state_dir/state.sqlite3``), WAL journal, ``synchronous=FULL``: a
committed transaction survives a crash or power loss. Tables:

- ``checkpoints``: where each source has been read up to
  (:mod:`alert_service.state.checkpoints`).
- ``outbox``: one row per (alert, rule, destination), with its delivery state.
- ``active_rows``: rows each (host, query) has logged as added and not yet
  removed, to recognise old rows in a counter-0 re-log
  (:mod:`alert_service.state.baseline`).
- ``baseline_runs``: the last counter-0 run seen per (host, query).
- ``silences``: dedup keys and when their silence ends.
- ``operator_silences``: silences an operator set (``silence add``,
  :mod:`alert_service.state.silences`); created when missing, old databases included.

Schema history: 1 → 2 added ``checkpoints.fingerprint_bytes`` and ``baseline_runs``;
a version-1 database is upgraded in place when opened.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from alert_service.state.postgres import PgTarget, open_pg_existing, open_pg_state

__all__ = [
    "SCHEMA_VERSION",
    "STATE_FILE",
    "StateConnection",
    "StateCursor",
    "StateTarget",
    "open_state",
    "open_state_reader",
    "open_state_readonly",
    "open_state_writer",
]

SCHEMA_VERSION = 2

STATE_FILE = "state.sqlite3"
"""Name of the state database inside ``state_dir``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,        -- the live path followed (configured, or matched by a glob)
    path TEXT NOT NULL,             -- the file being read (the rotated name while draining it)
    dev INTEGER NOT NULL,           -- st_dev, stored as a signed 64-bit value
    inode INTEGER NOT NULL,         -- st_ino, stored as a signed 64-bit value
    offset INTEGER NOT NULL,        -- bytes (decompressed for .zst/.gz), where the next line starts
    fingerprint BLOB NOT NULL,      -- SHA-256 of the file's first fingerprint_bytes bytes
    fingerprint_bytes INTEGER NOT NULL DEFAULT 0,  -- at most 1024
    updated_at REAL NOT NULL        -- seconds since the Unix epoch
);
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL,         -- stable id, sent as webhook-id
    rule TEXT NOT NULL,
    destination TEXT NOT NULL,      -- notifier name
    payload TEXT NOT NULL,          -- the versioned record (state/record.py)
    created_at REAL NOT NULL,       -- seconds since the Unix epoch
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | dead | suppressed | silenced
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,  -- seconds since the Unix epoch
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    PRIMARY KEY (alert_id, rule, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS active_rows (
    host TEXT NOT NULL,             -- hostIdentifier
    query TEXT NOT NULL,            -- the logged query name
    row_hash TEXT NOT NULL,         -- hash of the typed columns
    seen_at REAL NOT NULL,          -- unixTime of the run that last logged the row
    PRIMARY KEY (host, query, row_hash)
);
CREATE TABLE IF NOT EXISTS baseline_runs (
    host TEXT NOT NULL,
    query TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    unix_time INTEGER NOT NULL,     -- the run's unixTime
    open INTEGER NOT NULL,          -- 1 until a later run of (host, query) closes it
    PRIMARY KEY (host, query)
);
CREATE TABLE IF NOT EXISTS silences (
    key TEXT PRIMARY KEY,
    until REAL NOT NULL             -- seconds since the Unix epoch
);
CREATE TABLE IF NOT EXISTS operator_silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,       -- seconds since the Unix epoch
    ends_at REAL NOT NULL,          -- seconds since the Unix epoch
    rule TEXT,                      -- NULL = any; the matchers below all must match
    host TEXT,                      -- hostIdentifier or the hostname decoration
    process TEXT,                   -- the process name column
    remote TEXT,                    -- a CIDR holding remote_address
    comment TEXT NOT NULL
);
"""


class StateCursor(Protocol):
    """What a statement returns: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class StateConnection(Protocol):
    """The state database as every stage uses it: the one seam between the stages and
    the backend (a :class:`sqlite3.Connection`, or a
    :class:`~alert_service.state.postgres.PgConnection`).

    Statements are written in SQLite's dialect; errors are :class:`sqlite3.Error`
    for both backends.
    """

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> StateCursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> StateCursor: ...

    def close(self) -> None: ...


StateTarget = str | Path | PgTarget
"""Where the state lives: an SQLite file (or ``:memory:``), or a PostgreSQL schema."""


def open_state(path: StateTarget) -> StateConnection:
    """Open (creating if needed) the state database at ``path``.

    Returns:
        a connection in autocommit mode (``isolation_level=None``): callers
        group writes with explicit ``BEGIN IMMEDIATE`` ... ``COMMIT``.

    Raises:
        sqlite3.Error: the file cannot be opened or is not a state database
            of a known schema version (for PostgreSQL:
            :class:`~alert_service.state.postgres.PgStateError`, a subclass).
    """
    if isinstance(path, PgTarget):
        return open_pg_state(path)
    return _open_sqlite(Path(path))


def _open_sqlite(path: Path) -> sqlite3.Connection:
    """Open the SQLite state file ``path`` (``:memory:`` for a private one)."""
    if str(path) != ":memory:":
        _private(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _prepare(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        conn.close()
        raise
    conn.execute("COMMIT")
    if version != SCHEMA_VERSION:
        conn.close()
        raise sqlite3.DatabaseError(
            f"{path}: state schema version {version}, this service knows {SCHEMA_VERSION}"
        )
    return conn


def _private(path: Path) -> None:
    """Create the state directory 0700 and the database 0600 when they are new, and
    take group and other access from an existing database we own.

    The outbox holds command lines and the checkpoints name the logs; under systemd
    ``StateDirectoryMode=0700`` and ``UMask=0077`` already do this, elsewhere the
    process umask (often 022) would make both readable by every user. SQLite gives its
    ``-wal`` and ``-shm`` files the mode of the database file (SQLite docs, "Write-Ahead
    Logging" and os_unix.c ``findCreateFileMode``).

    Root creating a new database in a directory another user owns (an operator
    command such as ``silence add`` run with sudo before the service first ran) gives
    it to the directory's owner and group, as the service's user could not open a
    root-owned database; SQLite, running as root, gives the ``-wal`` and ``-shm``
    files the database file's owner (os_unix.c ``robust_open``).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)
        return
    try:
        parent = path.parent.stat()
        if os.geteuid() == 0 and parent.st_uid != 0:
            os.fchown(fd, parent.st_uid, parent.st_gid)
    finally:
        os.close(fd)


def open_state_readonly(path: str | Path) -> sqlite3.Connection:
    """Open an existing state database for reading only, beside a running service.

    SQLite's WAL mode lets readers see the last committed state while ``run`` writes
    (https://sqlite.org/wal.html "Concurrency"); the connection cannot write
    (``mode=ro`` URI, https://sqlite.org/uri.html).

    Raises:
        FileNotFoundError: there is no database at ``path`` (``run`` has not started yet).
        sqlite3.Error: the file cannot be read or is not a database.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no state database (has run ever started?)")
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30
    )
    conn.execute("PRAGMA query_only=1")
    return conn


def open_state_reader(target: StateTarget) -> StateConnection:
    """Open the state at ``target`` for an operator's reads, beside running instances.

    SQLite: :func:`open_state_readonly`. PostgreSQL: a connection whose transactions
    are all read-only (``default_transaction_read_only``,
    https://www.postgresql.org/docs/current/runtime-config-client.html) to the
    existing schema, neither created nor upgraded
    (:func:`~alert_service.state.postgres.open_pg_existing`).

    Raises:
        FileNotFoundError: no SQLite database at ``target``.
        sqlite3.Error: the state cannot be opened or read
            (:class:`~alert_service.state.postgres.PgStateError` for PostgreSQL;
            :class:`~alert_service.state.postgres.PgStateMissingError` when the schema
            or its tables do not exist).
    """
    if isinstance(target, PgTarget):
        conn = open_pg_existing(target)
        try:
            conn.execute("SET default_transaction_read_only = on")
        except BaseException:
            conn.close()
            raise
        return conn
    return open_state_readonly(target)


def open_state_writer(target: StateTarget) -> StateConnection:
    """Open the state at ``target`` for an operator's short writes (retry, purge,
    silences), beside running instances.

    SQLite: :func:`open_state` (a silence may be set before the service first runs).
    PostgreSQL: the existing schema, neither created nor upgraded
    (:func:`~alert_service.state.postgres.open_pg_existing`): on a shared server a
    mistyped schema would otherwise take a silence that no instance ever reads.

    Raises:
        sqlite3.Error: as :func:`open_state_reader`.
    """
    if isinstance(target, PgTarget):
        return open_pg_existing(target)
    return open_state(target)


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (``executescript`` would commit)."""
    out: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                out.append(pending)
            pending = ""
    return out


def _prepare(conn: sqlite3.Connection) -> int:
    """Create or upgrade the schema inside the caller's transaction; return its version."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    row = (
        conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if exists
        else None
    )
    version = int(row[0]) if row is not None else SCHEMA_VERSION
    if version == 1:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
        if columns and "fingerprint_bytes" not in columns:
            conn.execute(
                "ALTER TABLE checkpoints ADD COLUMN fingerprint_bytes INTEGER NOT NULL DEFAULT 0"
            )
        version = SCHEMA_VERSION
    if version != SCHEMA_VERSION:
        return version
    for statement in _statements(_SCHEMA):
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(SCHEMA_VERSION),),
    )
    return version
