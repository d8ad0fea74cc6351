"""The outbox: alerts queued per destination, and their delivery states.

Producer side: :func:`enqueue_alerts`, called inside the transaction that also advances
the source checkpoint (docs/design/delivery.md, "Outbox"). Rows are keyed by
(alert id, rule, destination) and inserted with ``INSERT OR IGNORE``, so re-reading
a line after a crash adds nothing twice. The ``payload`` column holds the alert's
versioned record
(:mod:`alert_service.state.record`: the alert, its query-name parts and its dedup
window); each destination's worker decodes and renders it for its notifier when
sending (rendering is pure, so every attempt and a restart send the same body).

Consumer side (the delivery workers of :mod:`alert_service.deliver`, one connection
each): :func:`due_rows`, then :func:`mark_sent` / :func:`mark_retry` /
:func:`mark_dead` / :func:`mark_suppressed`; silences (``silences`` table) are written
in the same transaction as the ``sent`` state, so only a confirmed delivery silences
a key. States::

    pending ──2xx──► sent
       │  └─retryable error──► pending (attempts+1, next_attempt_at later, last_error)
       ├─other 4xx, bad payload, too old──► dead
       ├─silenced key / repeat in a digest──► suppressed
       └─an operator's silence in force (state/silences.py)──► silenced

``dead`` and ``silenced`` rows go back to ``pending`` on an operator's retry
(:func:`alert_service.state.inspect.retry_rows`), keeping their alert id.

All times are Unix seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from alert_service.match import Alert
from alert_service.state.db import StateConnection
from alert_service.state.postgres import PgConnection, claim_due_rows
from alert_service.state.record import encode_record

__all__ = [
    "OutboxRow",
    "QueueDepth",
    "active_silences",
    "count_due",
    "due_rows",
    "enqueue_alerts",
    "lock_keys",
    "mark_dead",
    "mark_retry",
    "mark_sent",
    "mark_silenced",
    "mark_suppressed",
    "next_due_at",
    "purge",
    "queue_depths",
    "transaction",
    "unlock_keys",
]

_ERROR_CHARS = 500


def enqueue_alerts(
    conn: StateConnection,
    alerts: Iterable[Alert],
    now: float,
    rule_windows: Mapping[str, float] | None = None,
) -> int:
    """Insert one pending outbox row per (alert, destination).

    Args:
        conn: the state database, inside the caller's transaction.
        alerts: matched alerts; each goes to every notifier in ``alert.notify``.
        now: seconds since the Unix epoch; also the first attempt time.
        rule_windows: rule name → its own ``dedup_window_secs``, stored in the record
            (rules not listed use the delivery default).

    Returns:
        rows actually inserted (0 for alerts already in the outbox).
    """
    windows = rule_windows or {}
    inserted = 0
    for alert in alerts:
        payload = encode_record(alert, windows.get(alert.rule))
        for destination in alert.notify:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO outbox (alert_id, rule, destination, payload,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
                (alert.id, alert.rule, destination, payload, now, now),
            )
            inserted += cursor.rowcount
    return inserted


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending row, as a worker reads it.

    Attributes:
        rowid: SQLite rowid (the handle for updates).
        alert_id: stable alert id (``webhook-id``).
        rule: rule name.
        destination: notifier name.
        payload: the record (:func:`~alert_service.state.record.decode_record`).
        created_at: when it was queued, Unix seconds.
        attempts: attempts made so far.
        next_attempt_at: earliest next attempt, Unix seconds.
    """

    rowid: int
    alert_id: str
    rule: str
    destination: str
    payload: str
    created_at: float
    attempts: int
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """Pending rows of one destination.

    Attributes:
        pending: rows in state ``pending``.
        oldest_created_at: ``created_at`` of the oldest of them, or None when none.
    """

    pending: int
    oldest_created_at: float | None


@contextmanager
def transaction(conn: StateConnection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_ROW_COLUMNS = "rowid, alert_id, rule, destination, payload, created_at, attempts, next_attempt_at"


def due_rows(conn: StateConnection, destination: str, now: float, limit: int) -> list[OutboxRow]:
    """Return up to ``limit`` pending rows of ``destination`` due at ``now``.

    Ordered by ``next_attempt_at`` then queue order, so a row that just failed goes
    behind rows never tried (one bad row does not block the others). On PostgreSQL
    the rows are claimed for ``state.claim_secs`` (another instance's worker skips
    them meanwhile); :func:`release_claims` gives back rows not attempted.
    """
    if isinstance(conn, PgConnection):  # shared by instances: claim the rows
        claimed = claim_due_rows(conn, destination, now, limit, conn.claim_secs)
        return [OutboxRow(*r) for r in claimed]
    cursor = conn.execute(
        f"SELECT {_ROW_COLUMNS} FROM outbox WHERE destination = ? AND state = 'pending'"
        " AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at, rowid LIMIT ?",
        (destination, now, limit),
    )
    return [OutboxRow(*row) for row in cursor.fetchall()]


def _unclaimed(conn: StateConnection) -> str:
    """The condition leaving out rows another worker has claimed (PostgreSQL)."""
    return " AND claim_until <= ?" if isinstance(conn, PgConnection) else ""


def count_due(conn: StateConnection, destination: str, now: float) -> int:
    """Return how many pending rows of ``destination`` are due at ``now`` (on
    PostgreSQL: and not claimed by a worker, so a digest counts only what it can take)."""
    claimed = (now,) if isinstance(conn, PgConnection) else ()
    row = conn.execute(
        "SELECT COUNT(*) FROM outbox WHERE destination = ? AND state = 'pending'"
        f" AND next_attempt_at <= ?{_unclaimed(conn)}",
        (destination, now, *claimed),
    ).fetchone()
    return int(row[0])


def next_due_at(conn: StateConnection, destination: str, now: float = 0.0) -> float | None:
    """Return the earliest ``next_attempt_at`` of the destination's pending rows, or None.

    On PostgreSQL rows claimed at ``now`` by a worker are left out: a worker whose
    rows are all claimed by others waits a poll instead of asking again at once.
    """
    claimed = (now,) if isinstance(conn, PgConnection) else ()
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM outbox WHERE destination = ? AND state = 'pending'"
        f"{_unclaimed(conn)}",
        (destination, *claimed),
    ).fetchone()
    return None if row[0] is None else float(row[0])


def _clip(error: str) -> str:
    return error[:_ERROR_CHARS]


def mark_sent(
    conn: StateConnection,
    rows: Sequence[OutboxRow],
    now: float,
    silences: Mapping[str, float],
) -> None:
    """Mark ``rows`` delivered and record ``silences`` (key → until) in one transaction."""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, delivered_at = ?,"
            " last_error = '' WHERE rowid = ? AND state = 'pending'",
            [(now, r.rowid) for r in rows],
        )
        conn.executemany(
            "INSERT INTO silences (key, until) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET until = MAX(until, excluded.until)",
            list(silences.items()),
        )


def mark_retry(
    conn: StateConnection, rows: Sequence[OutboxRow], next_attempt_at: float, error: str
) -> None:
    """Count a failed attempt on ``rows`` and schedule the next one."""
    claim = ", claim_until = 0" if isinstance(conn, PgConnection) else ""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            f"{claim} WHERE rowid = ? AND state = 'pending'",
            [(next_attempt_at, _clip(error), r.rowid) for r in rows],
        )


def release_claims(conn: StateConnection, rows: Sequence[OutboxRow]) -> None:
    """Give back the claims of ``rows`` that were not attempted (PostgreSQL only)."""
    if isinstance(conn, PgConnection) and rows:
        conn.executemany(
            "UPDATE outbox SET claim_until = 0 WHERE rowid = ? AND state = 'pending'",
            [(r.rowid,) for r in rows],
        )


def lock_keys(conn: PgConnection, keys: Iterable[str]) -> set[str]:
    """Take the session advisory lock of each dedup key that no other session holds;
    return the keys locked (PostgreSQL only).

    A key (32 hex digits, :func:`~alert_service.deliver.dedup.silence_key`) is locked
    by its first 64 bits (https://www.postgresql.org/docs/current/functions-admin.html
    ``pg_try_advisory_lock``). A worker that dies loses its locks with its session.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    cursor = conn.execute(
        "SELECT k FROM unnest(CAST(? AS TEXT[])) AS k"
        " WHERE pg_try_advisory_lock(CAST(CAST('x' || left(k, 16) AS BIT(64)) AS BIGINT))",
        (wanted,),
    )
    return {str(row[0]) for row in cursor}


def unlock_keys(conn: StateConnection) -> None:
    """Release every advisory lock of this session (:func:`lock_keys`)."""
    if isinstance(conn, PgConnection):
        conn.execute("SELECT pg_advisory_unlock_all()")


def mark_dead(
    conn: StateConnection, rows: Sequence[OutboxRow], error: str, *, attempted: bool = True
) -> None:
    """Dead-letter ``rows`` (never retried) with ``error``; ``attempted`` counts an attempt."""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET state = 'dead', attempts = attempts + ?, last_error = ?"
            " WHERE rowid = ? AND state = 'pending'",
            [(1 if attempted else 0, _clip(error), r.rowid) for r in rows],
        )


def mark_suppressed(conn: StateConnection, rows: Sequence[OutboxRow], reason: str) -> None:
    """Mark ``rows`` suppressed (a repeat inside the dedup window); nothing is sent."""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET state = 'suppressed', last_error = ?"
            " WHERE rowid = ? AND state = 'pending'",
            [(_clip(reason), r.rowid) for r in rows],
        )


def mark_silenced(conn: StateConnection, rows: Sequence[tuple[OutboxRow, str]]) -> None:
    """Mark each row ``silenced`` by an operator's silence, with its reason; nothing is sent."""
    with transaction(conn):
        conn.executemany(
            "UPDATE outbox SET state = 'silenced', last_error = ?"
            " WHERE rowid = ? AND state = 'pending'",
            [(_clip(reason), row.rowid) for row, reason in rows],
        )


def active_silences(conn: StateConnection, keys: Iterable[str], now: float) -> set[str]:
    """Return the ``keys`` whose silence lasts beyond ``now``."""
    wanted = list(dict.fromkeys(keys))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(
            f"SELECT key FROM silences WHERE until > ? AND key IN ({marks})", (now, *chunk)
        )
        found.update(row[0] for row in cursor)
    return found


def queue_depths(conn: StateConnection) -> dict[str, QueueDepth]:
    """Return the pending rows per destination (destinations with none are absent)."""
    cursor = conn.execute(
        "SELECT destination, COUNT(*), MIN(created_at) FROM outbox WHERE state = 'pending'"
        " GROUP BY destination"
    )
    return {dest: QueueDepth(int(n), float(oldest)) for dest, n, oldest in cursor}


def purge(conn: StateConnection, now: float, retention_secs: float) -> tuple[int, int]:
    """Delete finished rows queued before ``now - retention_secs`` and expired silences.

    Returns:
        ``(outbox rows deleted, silences deleted)``.
    """
    with transaction(conn):
        rows = conn.execute(
            "DELETE FROM outbox WHERE state IN ('sent', 'dead', 'suppressed', 'silenced')"
            " AND created_at < ?",
            (now - retention_secs,),
        ).rowcount
        silences = conn.execute("DELETE FROM silences WHERE until <= ?", (now,)).rowcount
    return rows, silences
