"""The state database on PostgreSQL, for several instances sharing one state.

Same tables and the same SQL as the SQLite state (:mod:`alert_service.state.db`):
checkpoints (one per source partition), outbox, active rows and baseline runs,
silences, aggregation windows (:mod:`alert_service.state.windows`), plus the tables
only a cluster needs: ``leases`` (:mod:`alert_service.state.leases`) and
``rate_buckets`` (:mod:`alert_service.state.buckets`). :class:`PgConnection` gives
the state modules the few methods of :class:`sqlite3.Connection` they use and
rewrites the few SQLite spellings once per statement (``?`` placeholders,
``BEGIN IMMEDIATE``, ``INSERT OR IGNORE``, two-argument ``MAX``, the column named
``offset``); the ``rowid`` of the outbox and of the aggregation windows is a real
column here (``BIGSERIAL``, in insertion order).

Errors: every driver error is raised as :class:`PgStateError`, a subclass of
:class:`sqlite3.OperationalError`, so the pipeline and the delivery workers handle a
failed PostgreSQL transaction exactly like a failed SQLite one (rollback, pause,
retry) — the one place where errors of the backend are translated.

Outbox rows are claimed before they are sent (:func:`claim_due_rows`): a claim is a
deadline in ``claim_until``, taken with ``FOR UPDATE SKIP LOCKED`` so workers of
several instances never take the same row while the claim lasts. A worker that dies
mid-send leaves the claim to expire; the row is then sent by another worker with the
same ``webhook-id`` (an unknown-outcome send, the only source of duplicates).

Driver: psycopg 3 (https://www.psycopg.org/psycopg3/docs/), autocommit connections
with explicit ``BEGIN``/``COMMIT``. Server: PostgreSQL 12 or newer.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the driver is imported when a PostgreSQL state is opened
    import psycopg

__all__ = [
    "PG_SCHEMA_VERSION",
    "PgConnection",
    "PgStateError",
    "PgTarget",
    "open_pg_existing",
    "open_pg_state",
]

PG_SCHEMA_VERSION = 2
"""Version 2 added ``aggregate_windows`` (with a ``rowid``) and ``rate_buckets``; a
version-1 schema is upgraded in place when opened."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    dev BIGINT NOT NULL,
    inode BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    fingerprint BYTEA NOT NULL,
    fingerprint_bytes INTEGER NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    rowid BIGSERIAL UNIQUE,
    alert_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    destination TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    delivered_at DOUBLE PRECISION,
    claim_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (alert_id, rule, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (destination, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS active_rows (
    host TEXT NOT NULL,
    query TEXT NOT NULL,
    row_hash TEXT NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (host, query, row_hash)
);
CREATE TABLE IF NOT EXISTS baseline_runs (
    host TEXT NOT NULL,
    query TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    unix_time BIGINT NOT NULL,
    open INTEGER NOT NULL,
    PRIMARY KEY (host, query)
);
CREATE TABLE IF NOT EXISTS silences (
    key TEXT PRIMARY KEY,
    until DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS operator_silences (
    id BIGSERIAL PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL,
    ends_at DOUBLE PRECISION NOT NULL,
    rule TEXT,
    host TEXT,
    process TEXT,
    remote TEXT,
    comment TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS aggregate_windows (
    rowid BIGSERIAL UNIQUE,
    rule TEXT NOT NULL,
    group_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (rule, group_key)
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    destination TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
"""

_UPGRADE_1_TO_2 = (
    # A version-1 schema may hold an aggregate_windows table made by
    # state/windows.py's SQLite definition: no rowid, a 4-byte REAL time.
    "ALTER TABLE aggregate_windows ADD COLUMN IF NOT EXISTS rowid BIGSERIAL UNIQUE",
    "ALTER TABLE aggregate_windows ALTER COLUMN updated_at TYPE DOUBLE PRECISION",
)


OPERATOR_TABLES = ("meta", "checkpoints", "outbox", "silences", "operator_silences", "leases")
"""The tables the operator commands and the console read and change: the same in
schema versions 1 and 2 (:func:`open_pg_existing` works on either). A version that
changes them must make :func:`open_pg_existing` refuse the older versions."""


class PgStateError(sqlite3.OperationalError):
    """A PostgreSQL error of the state database (the driver's error is ``__cause__``)."""


class PgStateMissingError(PgStateError):
    """The state schema, or one of its tables, does not exist (no instance of ``run``
    has started on it: often a mistyped ``state.schema``)."""


@dataclass(frozen=True, slots=True)
class PgTarget:
    """Where the PostgreSQL state lives.

    Attributes:
        dsn: a libpq connection string or URI
            (https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING).
        schema: the schema holding the tables (``run`` creates it when missing;
            the operator commands never do).
        claim_secs: how long a delivery worker's claim on outbox rows lasts,
            seconds: longer than a batch of sends can take, since a claim only
            expires when its worker died mid-batch (and the rows are then sent again).
    """

    dsn: str
    schema: str = "tracked_connections"
    claim_secs: float = 300.0

    def __repr__(self) -> str:  # the DSN may hold a password
        return f"PgTarget(schema={self.schema!r})"


_PLACEHOLDER = re.compile(r"\?")
_OFFSET = re.compile(r"\boffset\b")


def translate(statement: str) -> str:
    """Rewrite one statement of the SQLite state modules for PostgreSQL."""
    out = statement.strip()
    if out == "BEGIN IMMEDIATE":
        return "BEGIN"
    if out.startswith("INSERT OR IGNORE INTO"):
        out = "INSERT INTO" + out[len("INSERT OR IGNORE INTO") :] + " ON CONFLICT DO NOTHING"
    out = out.replace("MAX(until, excluded.until)", "GREATEST(silences.until, excluded.until)")
    out = _OFFSET.sub('"offset"', out)
    return _PLACEHOLDER.sub("%s", out)


class _Cursor:
    """The results of one statement: rows (when it returned any) and ``rowcount``."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


def _driver_error() -> type[Exception]:
    """The base class of the driver's errors."""
    import psycopg  # noqa: PLC0415

    return psycopg.Error


class PgConnection:
    """A PostgreSQL connection with the :class:`sqlite3.Connection` methods the state
    modules call (``execute``, ``executemany``, ``in_transaction``, ``close``).

    Raises:
        PgStateError: from every method, for every driver error.
    """

    def __init__(
        self, conn: psycopg.Connection[tuple[Any, ...]], claim_secs: float = 300.0
    ) -> None:
        from psycopg.pq import TransactionStatus  # noqa: PLC0415 - loaded with the driver

        self.raw = conn
        self.claim_secs = claim_secs
        self._driver_error = _driver_error()
        self._idle = TransactionStatus.IDLE
        self._sql: dict[str, str] = {}
        self.schema_version = PG_SCHEMA_VERSION
        """The version of the schema as stored: older than :data:`PG_SCHEMA_VERSION`
        only on a connection of :func:`open_pg_existing` (which upgrades nothing)."""

    def _text(self, statement: str) -> str:
        text = self._sql.get(statement)
        if text is None:
            text = self._sql[statement] = translate(statement)
        return text

    def execute(self, statement: str, parameters: Sequence[Any] = (), /) -> _Cursor:
        text = self._text(statement)
        try:
            cur = self.raw.execute(text.encode(), tuple(parameters) or None)
            rows = cur.fetchall() if cur.description is not None else []
            return _Cursor(rows, cur.rowcount)
        except self._driver_error as err:
            raise PgStateError(f"{type(err).__name__}: {err}") from err

    def executemany(self, statement: str, parameters: Iterable[Sequence[Any]], /) -> _Cursor:
        text = self._text(statement)
        params = [tuple(p) for p in parameters]
        if not params:
            return _Cursor([], 0)
        try:
            with self.raw.cursor() as cur:
                cur.executemany(text.encode(), params)
                return _Cursor([], cur.rowcount)
        except self._driver_error as err:
            raise PgStateError(f"{type(err).__name__}: {err}") from err

    @property
    def in_transaction(self) -> bool:
        """True between ``BEGIN`` and ``COMMIT``/``ROLLBACK``."""
        return self.raw.info.transaction_status != self._idle

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back by the server)."""
        self.raw.close()


def open_pg_state(target: PgTarget) -> PgConnection:
    """Connect to ``target`` and create its schema and tables when missing.

    Raises:
        PgStateError: the server cannot be reached, or the schema is of another
            version than this service knows.
    """
    import psycopg  # noqa: PLC0415 - only a PostgreSQL state needs the driver
    from psycopg import sql  # noqa: PLC0415

    try:
        raw = psycopg.connect(target.dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as err:
        raise PgStateError(f"cannot connect to the PostgreSQL state: {err}") from err
    conn = PgConnection(raw, target.claim_secs)
    try:
        schema = sql.Identifier(target.schema)
        with raw.transaction():
            # One instance creates the schema and tables at a time (CREATE ... IF NOT
            # EXISTS alone is not safe against a concurrent twin); the lock ends with
            # the transaction.
            raw.execute("SELECT pg_advisory_xact_lock(hashtext('tracked-connections-schema'))")
            raw.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            raw.execute(sql.SQL("SET search_path TO {}").format(schema))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    raw.execute(statement.encode())
            row = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                raw.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s)",
                    (str(PG_SCHEMA_VERSION),),
                )
            elif int(row[0]) == 1:
                for statement in _UPGRADE_1_TO_2:
                    raw.execute(statement.encode())
                raw.execute(
                    "UPDATE meta SET value = %s WHERE key = 'schema_version'",
                    (str(PG_SCHEMA_VERSION),),
                )
            elif int(row[0]) != PG_SCHEMA_VERSION:
                raise PgStateError(
                    f"state schema {target.schema}: version {row[0]},"
                    f" this service knows {PG_SCHEMA_VERSION}"
                )
    except psycopg.Error as err:
        raw.close()
        raise PgStateError(f"cannot prepare the PostgreSQL state: {err}") from err
    except BaseException:
        raw.close()
        raise
    return conn


def open_pg_existing(target: PgTarget) -> PgConnection:
    """Connect to ``target``'s existing schema, for the operator commands: nothing is
    created and nothing is upgraded.

    Creating is ``run``'s job (a mistyped schema must not look like an empty state,
    nor leave a schema no instance reads); upgrading too (instances of the older
    version may still run on the schema: they would meet tables they do not know).
    A schema of an older version is used as it is (:data:`OPERATOR_TABLES` are the
    same in every known version); :attr:`PgConnection.schema_version` says which.

    Raises:
        PgStateMissingError: the schema, or one of :data:`OPERATOR_TABLES`, does not
            exist (the message names the schema, never the DSN).
        PgStateError: the server cannot be reached, or the schema is of a newer version
            than this service knows, or has no version.
    """
    import psycopg  # noqa: PLC0415 - only a PostgreSQL state needs the driver
    from psycopg import sql  # noqa: PLC0415

    try:
        raw = psycopg.connect(target.dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as err:
        raise PgStateError(f"cannot connect to the PostgreSQL state: {err}") from err
    conn = PgConnection(raw, target.claim_secs)
    where = f"state schema {target.schema}"
    try:
        found = raw.execute(
            "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (target.schema,)
        ).fetchone()
        if found is None:
            raise PgStateMissingError(
                f"{where} does not exist (has run ever started on it? check state.schema;"
                " this command does not create it)"
            )
        tables = {
            str(r[0])
            for r in raw.execute(
                "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = %s",
                (target.schema,),
            )
        }
        missing = [t for t in OPERATOR_TABLES if t not in tables]
        if missing:
            raise PgStateMissingError(
                f"{where} has no table {', '.join(missing)}: not a tracked-connections"
                " state (has run ever started on it? this command does not create it)"
            )
        raw.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))
        row = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None or not str(row[0]).isdigit():
            raise PgStateError(f"{where} has no schema version: not a tracked-connections state")
        version = int(row[0])
        if version > PG_SCHEMA_VERSION:
            raise PgStateError(
                f"{where}: version {version}, this service knows {PG_SCHEMA_VERSION}"
                " (use the command of the version the instances run)"
            )
        conn.schema_version = version
    except psycopg.Error as err:
        raw.close()
        raise PgStateError(f"cannot read the PostgreSQL state: {err}") from err
    except BaseException:
        raw.close()
        raise
    return conn


def claim_due_rows(
    conn: PgConnection, destination: str, now: float, limit: int, claim_secs: float
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` due pending rows of ``destination`` until ``now + claim_secs``.

    Rows claimed by another worker whose claim has not expired are skipped (as are
    rows another transaction is claiming at this instant: ``SKIP LOCKED``).

    Returns:
        The rows' ``rowid, alert_id, rule, destination, payload, created_at,
        attempts, next_attempt_at``, in ``next_attempt_at``, ``created_at``, ``rowid``
        order.
    """
    cursor = conn.execute(
        "UPDATE outbox SET claim_until = ? WHERE rowid IN ("
        " SELECT rowid FROM outbox WHERE destination = ? AND state = 'pending'"
        " AND next_attempt_at <= ? AND claim_until <= ?"
        " ORDER BY next_attempt_at, created_at, rowid LIMIT ? FOR UPDATE SKIP LOCKED)"
        " RETURNING rowid, alert_id, rule, destination, payload, created_at, attempts,"
        " next_attempt_at",
        (now + claim_secs, destination, now, now, limit),
    )
    rows = cursor.fetchall()
    rows.sort(key=lambda r: (r[7], r[5], r[0]))
    return rows
